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

from faket_dask.stages.particles import (
    quaternions_to_matrices,
)
from faket_dask.stages.sample.spec import FIDUCIAL, MEMBRANE
from faket_dask.stages.templates import RotatedBox, Template, rotate_template

if TYPE_CHECKING:

    pass


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
    shared: RotatedBox | None = None  # its box on the class's orientation grid
    kind: str = "particle"

    def __post_init__(self) -> None:
        self.lo = self.position + self.box_offset
        self.hi = self.lo + self.box_shape

    def box(self) -> RotatedBox:
        if self.shared is not None:
            return self.shared
        box = self.cache.get(self.index)
        if box is None:
            box = rotate_template(self.template, quaternions_to_matrices(self.quaternion)[0])
            self.cache.put(self.index, box)
        return box

    def region(
        self, lo: np.ndarray, hi: np.ndarray, box: RotatedBox | None = None
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


class _BoxCache:
    """Rotated particle boxes by particle index, least recently used out past a byte budget.

    Boxes are kept compact: the mask as bits and the density only at the mask's voxels (a
    box's density is zero elsewhere), about a third of the plain arrays' bytes. So the
    layout's rotations usually all stay cached for rendering instead of being computed again.
    """

    def __init__(self, budget: int | None = None) -> None:
        self.budget = BOX_CACHE_BYTES if budget is None else int(budget)
        self.nbytes = 0
        self._boxes: OrderedDict[int, tuple[np.ndarray, tuple[int, ...], np.ndarray, np.ndarray]]
        self._boxes = OrderedDict()

    def get(self, key: int) -> RotatedBox | None:
        item = self._boxes.get(key)
        if item is None:
            return None
        self._boxes.move_to_end(key)
        offset, shape, bits, values = item
        mask = np.unpackbits(bits, count=int(np.prod(shape))).view(bool).reshape(shape)
        density = np.zeros(shape, dtype=np.float32)
        density[mask] = values
        return RotatedBox(offset=offset.copy(), density=density, mask=mask)

    def put(self, key: int, box: RotatedBox) -> None:
        if key in self._boxes:
            return
        bits = np.packbits(box.mask)
        values = np.ascontiguousarray(box.density[box.mask], dtype=np.float32)
        size = bits.nbytes + values.nbytes
        if size > self.budget:
            return
        self._boxes[key] = (np.array(box.offset, np.int64), box.shape, bits, values)
        self.nbytes += size
        while self.nbytes > self.budget:
            _, (_, _, old_bits, old_values) = self._boxes.popitem(last=False)
            self.nbytes -= old_bits.nbytes + old_values.nbytes

    def clear(self) -> None:
        self._boxes.clear()
        self.nbytes = 0


def _count_voxels(obj: _Object) -> int:
    if isinstance(obj, _Particle):
        return obj.voxels
    return int(sum(int(m.sum()) for _, m in obj.chunks()))


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
