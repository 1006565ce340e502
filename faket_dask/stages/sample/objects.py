"""The objects a sample holds and the grids that place them.

Particles, vesicles, discs and beads; the occupancy grid's budget (the grid and the placement
are in :mod:`~faket_dask.stages.sample.placement`) and the rotated-box cache.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from faket_dask.stages.sample import _shells
from faket_dask.stages.sample.rotation import VoxelBox, rotate_items
from faket_dask.stages.sample.spec import FIDUCIAL, MEMBRANE
from faket_dask.stages.templates import Template

if TYPE_CHECKING:
    import torch


#: Largest occupancy grid (bytes, one byte per cell) used while placing objects.
OCCUPANCY_GRID_BYTES = 256 * 1024**2


#: Rotated particle boxes kept for rendering (bytes); beyond it they are recomputed.
BOX_CACHE_BYTES = 256 * 1024**2


class _Object(ABC):
    """Something with a voxel mask inside a box ``[lo, hi)`` (z, y, x) of the volume."""

    kind: str
    class_id: int
    lo: np.ndarray
    hi: np.ndarray

    @abstractmethod
    def region(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Density (float32) and mask (bool) of the sub-box ``[lo, hi)`` of the object box."""

    def chunks(self, max_voxels: int = 1 << 24) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(lo, mask)`` pieces covering the object's box along Y (bounded memory)."""
        size = np.maximum(self.hi - self.lo, 1)
        rows = max(1, max_voxels // int(size[0] * size[2]))
        for y0 in range(int(self.lo[1]), int(self.hi[1]), rows):
            lo = self.lo.copy()
            hi = self.hi.copy()
            lo[1], hi[1] = y0, min(int(self.hi[1]), y0 + rows)
            yield lo, self.region(lo, hi)[1]

    def runs(self) -> np.ndarray:
        """``(n, 4)`` int64 ``(z, y, x0, x1)``: the mask's voxels, ``x0 <= x < x1`` of each row.

        From the dense mask of :meth:`chunks`; membranes and beads find them directly.
        """
        out = []
        for lo, mask in self.chunks():
            m = np.pad(mask, ((0, 0), (0, 0), (1, 1)))
            edge = np.diff(m.view(np.int8), axis=2)  # +1 where a run starts, -1 past its end
            zs, ys, starts = np.nonzero(edge == 1)
            ends = np.nonzero(edge == -1)[2]  # the same rows, in the same order
            out.append(np.stack([zs + lo[0], ys + lo[1], starts + lo[2], ends + lo[2]], axis=1))
        return np.concatenate([np.zeros((0, 4), np.int64), *out]).astype(np.int64)


def _grid(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates (float64) of ``[lo, hi)`` as broadcastable z, y, x."""
    return (
        np.arange(lo[0], hi[0], dtype=np.float64)[:, None, None],
        np.arange(lo[1], hi[1], dtype=np.float64)[None, :, None],
        np.arange(lo[2], hi[2], dtype=np.float64)[None, None, :],
    )


def _bilayer(t: np.ndarray, half: float, density: float, leaflets: bool) -> np.ndarray:
    """Density across a bilayer at signed distance ``t`` from its mid-plane (voxels)."""
    if not leaflets:
        return np.full(t.shape, density, dtype=np.float32)
    # dense head groups at the faces, a lighter hydrocarbon core (half the density) between
    return (density * (0.5 + 0.5 * (t / half) ** 2)).astype(np.float32)


@dataclass(eq=False)
class _Particle(_Object):
    index: int
    class_id: int
    template: Template
    quaternion: np.ndarray
    position: np.ndarray  # (z, y, x) int
    box_offset: np.ndarray
    box_shape: np.ndarray
    cache: _BoxCache
    voxels: int = 0
    shared: VoxelBox | None = None  # its box on the class's orientation grid
    device: str | torch.device | None = None  # where it is rotated again (cache misses)
    kind: str = "particle"

    def __post_init__(self) -> None:
        self.lo = self.position + self.box_offset
        self.hi = self.lo + self.box_shape

    def box(self) -> VoxelBox:
        if self.shared is not None:
            return self.shared
        box = self.cache.get(self.index)
        if box is None:
            box = rotate_items([(self.template, self.quaternion)], self.device)[0]
            self.cache.put(self.index, box)
        return box

    def region(
        self, lo: np.ndarray, hi: np.ndarray, box: VoxelBox | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        box = self.box() if box is None else box
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo - self.lo, hi - self.lo, strict=True))
        return box.density[sl], box.mask[sl]


@dataclass(eq=False)
class _Vesicle(_Object):
    class_id: int
    centre: np.ndarray  # (z, y, x) voxels, float
    radius: float  # mid-bilayer radius, voxels
    half: float  # half thickness, voxels
    density: float
    leaflets: bool
    shape: tuple[int, int, int]
    kind: str = MEMBRANE

    def __post_init__(self) -> None:
        ext = self.radius + self.half + 1.0
        self.lo = np.maximum(np.floor(self.centre - ext).astype(np.int64), 0)
        self.hi = np.minimum(np.ceil(self.centre + ext).astype(np.int64) + 1, self.shape)

    def region(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z, y, x = _grid(lo, hi)
        c = self.centre
        r = np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)
        t = r - self.radius
        mask = np.abs(t) <= self.half
        dens = np.where(mask, _bilayer(t, self.half, self.density, self.leaflets), 0)
        return dens.astype(np.float32), mask

    def runs(self) -> np.ndarray:
        """The shell's voxels as runs (:meth:`_Object.runs`), by a compiled kernel."""
        return _shells.sphere_runs(self.centre, self.lo, self.hi, False, self.radius, self.half)


@dataclass(eq=False)
class _Disc(_Object):
    class_id: int
    centre: np.ndarray  # (z, y, x)
    normal: np.ndarray  # unit, (z, y, x)
    radius: float
    half: float
    density: float
    leaflets: bool
    shape: tuple[int, int, int]
    kind: str = MEMBRANE

    def __post_init__(self) -> None:
        n = np.abs(self.normal)
        ext = self.radius * np.sqrt(np.clip(1.0 - n**2, 0.0, 1.0)) + self.half * n + 1.0
        self.lo = np.maximum(np.floor(self.centre - ext).astype(np.int64), 0)
        self.hi = np.minimum(np.ceil(self.centre + ext).astype(np.int64) + 1, self.shape)

    def region(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z, y, x = _grid(lo, hi)
        c, n = self.centre, self.normal
        dz, dy, dx = z - c[0], y - c[1], x - c[2]
        t = dz * n[0] + dy * n[1] + dx * n[2]
        rho2 = dz**2 + dy**2 + dx**2 - t**2
        mask = (np.abs(t) <= self.half) & (rho2 <= self.radius**2)
        dens = np.where(mask, _bilayer(t, self.half, self.density, self.leaflets), 0)
        return dens.astype(np.float32), mask

    def runs(self) -> np.ndarray:
        """The disc's voxels as runs (:meth:`_Object.runs`), by a compiled kernel."""
        r2 = self.radius**2
        return _shells.disc_runs(self.centre, self.normal, self.lo, self.hi, self.half, r2)


@dataclass(eq=False)
class _Bead(_Object):
    class_id: int
    centre: np.ndarray
    radius: float
    density: float
    shape: tuple[int, int, int]
    kind: str = FIDUCIAL

    def __post_init__(self) -> None:
        ext = self.radius + 1.0
        self.lo = np.maximum(np.floor(self.centre - ext).astype(np.int64), 0)
        self.hi = np.minimum(np.ceil(self.centre + ext).astype(np.int64) + 1, self.shape)

    def region(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z, y, x = _grid(lo, hi)
        c = self.centre
        mask = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= self.radius**2
        dens = np.where(mask, np.float32(self.density), np.float32(0))
        return dens.astype(np.float32), mask

    def runs(self) -> np.ndarray:
        """The ball's voxels as runs (:meth:`_Object.runs`), by a compiled kernel."""
        return _shells.sphere_runs(self.centre, self.lo, self.hi, True, 0.0, self.radius**2)


class _BoxCache:
    """Rotated particles (voxel lists) by particle index, least recently used out past a budget.

    A :class:`~faket_dask.stages.sample.rotation.VoxelBox` holds 7 bytes a voxel (int8
    offsets, float32 density) for templates up to 126 voxels in radius, so the layout's
    rotations usually all stay cached for rendering instead of being computed again.
    """

    def __init__(self, budget: int | None = None) -> None:
        self.budget = BOX_CACHE_BYTES if budget is None else int(budget)
        self.nbytes = 0
        self._boxes: OrderedDict[int, VoxelBox] = OrderedDict()

    def get(self, key: int) -> VoxelBox | None:
        box = self._boxes.get(key)
        if box is not None:
            self._boxes.move_to_end(key)
        return box

    def put(self, key: int, box: VoxelBox) -> None:
        if key in self._boxes or box.nbytes > self.budget:
            return
        self._boxes[key] = box
        self.nbytes += box.nbytes
        while self.nbytes > self.budget:
            _, old = self._boxes.popitem(last=False)
            self.nbytes -= old.nbytes

    def demote(self, key: int) -> None:
        """Make ``key`` the first box evicted (a box no longer needed, e.g. rendered)."""
        if key in self._boxes:
            self._boxes.move_to_end(key, last=False)

    def clear(self) -> None:
        self._boxes.clear()
        self.nbytes = 0


def _count_voxels(obj: _Object) -> int:
    if isinstance(obj, _Particle):
        return obj.voxels
    runs = obj.runs()
    return int((runs[:, 3] - runs[:, 2]).sum())


def _quaternion_z_to(v_xyz: np.ndarray) -> np.ndarray:
    """A quaternion (w, x, y, z) of the rotation taking +z to the unit vector ``v``."""
    z = np.array([0.0, 0.0, 1.0])
    v = np.asarray(v_xyz, dtype=np.float64)
    c = float(z @ v)
    if c < -1 + 1e-12:
        return np.array([0.0, 1.0, 0.0, 0.0])
    axis = np.cross(z, v)
    q = np.array([1.0 + c, *axis])
    return np.asarray(q / np.linalg.norm(q))
