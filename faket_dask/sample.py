"""The sample builder: labeled crowded volumes ("grand models"), drawn once, rendered by slabs.

Two steps:

1. :func:`build_layout` draws everything a sample holds from ``(seed, sample_id)`` alone:
   vesicles and planar membrane discs, gold beads, then particles with uniform random
   orientations and non-overlapping positions. The result, a :class:`SampleLayout`, is small
   (a list of objects and the particle table); the volume does not exist yet.
2. :func:`render_slab` renders Y rows ``[y0, y1)`` of the density, the class mask and the
   instance mask. Each voxel's value depends only on the layout and the voxel, so slabs
   concatenate to the bytes of a whole rendering (:func:`build_sample`), and a
   (500, 3500, 3500) sample is never whole in memory: the projection consumes the slabs.

Randomness: ``numpy.random.default_rng`` streams keyed by SHA-256 of ``(seed, sample_id,
purpose)``. ``"sample"`` draws membranes, beads and every position, in that order;
``"classes"`` and ``"orientations"`` draw particle ``i``'s class (occupancy mode) and
orientation, in blocks, so a block's rotations run ahead in threads (``FAKET_DASK_SAMPLE_THREADS``,
default: up to 8 cores) without changing any draw; ``("solvent", plane)`` the solvent.

No overlap: every object's exact voxel mask (a rotated particle's voxels above its contour,
a membrane's shell, a bead's ball) is tested against an occupancy grid before the object is
accepted and then marked in it. The grid has one cell per voxel when it fits in
``OCCUPANCY_GRID_BYTES``, else one cell per ``b x b x b`` voxels (a cell is taken when any of
its voxels is): conservative, so voxel masks never overlap. Particles lie wholly inside the
volume; membranes and beads may be cut by its faces.

Counts: a class with ``count`` gets exactly that many particles (or an :class:`InputError`
when they cannot be placed). With ``sample.occupancy``, particles are added one at a time,
each drawing its class with probability proportional to the abundances, until their voxels
cover that fraction of the volume (counted classes included; membranes and beads excluded).
Each particle keeps its class and orientation until it is placed, so neither abundances nor
orientations are biased by crowding; if one cannot be placed, filling stops (``jammed``).

Densities (dense = positive): particles carry their template's density (mean
``density``, 1 by default, inside the contour); membranes are bilayers of ``thickness``
(at least one voxel) with head groups at ``density`` and a core at half of it
(``leaflets: false``: uniform); vesicle radii are mid-bilayer; planar segments are discs
with a random normal; beads are balls of ``fiducials.density``. The solvent, when on, fills
the background voxels only (unlabeled) with ``solvent * (1 + solvent_noise * n)`` clipped at
zero, ``n`` a smooth noise of correlation length ``solvent_correlation``.

Labels: class ids are 1..K for the particle classes in config order, then ``membrane`` and
``fiducial`` (always assigned, so every sample of a dataset shares the mapping); 0 is
background. Instance ids are 1..N: particles, then membranes, then beads, the table's
``id``. The class mask is uint8 (uint16 above 255 classes), the instance mask uint32.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from faket_dask.config import ParticleClassConfig, SampleConfig
from faket_dask.errors import InputError
from faket_dask.particles import (
    empty_table,
    quaternions_to_matrices,
    random_quaternions,
    read_particle_list,
    table_from_arrays,
)
from faket_dask.templates import RotatedBox, Template, load_template, rotate_template

if TYPE_CHECKING:
    import torch

    from faket_dask.config import SimulationConfig

__all__ = [
    "OCCUPANCY_GRID_BYTES",
    "GrandModelLayout",
    "Sample",
    "SampleLayout",
    "SampleSpec",
    "build_layout",
    "build_sample",
    "default_slab_size",
    "import_grand_model",
    "iter_slabs",
    "keyed_rng",
    "render_slab",
]

#: Largest occupancy grid (bytes, one byte per cell) used while placing objects.
OCCUPANCY_GRID_BYTES = 256 * 1024**2
#: Rotated particle boxes kept for rendering (bytes); beyond it they are recomputed.
BOX_CACHE_BYTES = 256 * 1024**2
#: A slab's arrays (density + masks) are kept under about this many bytes by default.
SLAB_BYTES = 256 * 1024**2
#: Candidate positions drawn at a time while placing one object.
_BATCH = 32

MEMBRANE = "membrane"
FIDUCIAL = "fiducial"


def keyed_rng(*keys: object) -> np.random.Generator:
    """A generator keyed by SHA-256 of the JSON of ``keys`` (e.g. seed, sample id, purpose)."""
    text = json.dumps(list(keys), separators=(",", ":"), default=str)
    digest = hashlib.sha256(text.encode()).digest()
    return np.random.default_rng(np.random.SeedSequence(int.from_bytes(digest[:16], "little")))


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class SampleSpec:
    """Everything one sample is a pure function of.

    Attributes
    ----------
    sample
        The config's ``sample`` section.
    shape
        ``(Z, Y, X)`` of the volume: ``(sample.thickness, *tilts.shape)``.
    pixel_spacing
        Å per voxel.
    seed, sample_id
        The dataset seed and this sample's id.
    base_dir
        Folder against which relative template and import paths are tried first (e.g. the
        config file's folder); then the working directory.
    """

    sample: SampleConfig
    shape: tuple[int, int, int]
    pixel_spacing: float
    seed: int = 0
    sample_id: int = 0
    base_dir: str | None = None

    @classmethod
    def from_config(
        cls,
        config: SimulationConfig,
        sample_id: int = 0,
        *,
        seed: int | None = None,
        base_dir: str | Path | None = None,
    ) -> SampleSpec:
        """The spec of sample ``sample_id`` of a dataset (``seed`` overrides ``config.seed``)."""
        h, w = config.tilts.shape
        return cls(
            sample=config.sample,
            shape=(int(config.sample.thickness), int(h), int(w)),
            pixel_spacing=float(config.tilts.pixel_spacing),
            seed=int(config.seed if seed is None else seed),
            sample_id=int(sample_id),
            base_dir=None if base_dir is None else str(base_dir),
        )

    def resolve(self, path: str) -> str:
        """A config path resolved against ``base_dir`` (if the file is there) or as given."""
        p = Path(path).expanduser()
        if not p.is_absolute() and self.base_dir is not None:
            q = Path(self.base_dir) / p
            if q.exists():
                return str(q)
        return str(p)


# --------------------------------------------------------------------------- objects


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
    kind: str = "particle"

    def __post_init__(self) -> None:
        self.lo = self.position + self.box_offset
        self.hi = self.lo + self.box_shape

    def box(self) -> RotatedBox:
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


# --------------------------------------------------------------------------- occupancy


class _Occupancy:
    """Voxels (or b^3 blocks of voxels) already taken, for overlap-free placement."""

    def __init__(self, shape: tuple[int, int, int], budget: int | None = None) -> None:
        budget = OCCUPANCY_GRID_BYTES if budget is None else budget
        self.shape = np.array(shape, dtype=np.int64)
        b = 1
        while int(np.prod(-(-self.shape // b))) > budget:
            b += 1
        self.b = b
        self.grid = np.zeros(tuple(int(v) for v in -(-self.shape // b)), dtype=bool)

    def _coarse(self, lo: np.ndarray, mask: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
        b = self.b
        if b == 1:
            return tuple(
                slice(int(a), int(a + s)) for a, s in zip(lo, mask.shape, strict=True)
            ), mask
        clo = lo // b
        chi = (lo + np.array(mask.shape) - 1) // b + 1
        before = lo - clo * b
        padded = np.zeros(tuple(int(v) for v in (chi - clo) * b), dtype=bool)
        padded[
            tuple(slice(int(a), int(a + s)) for a, s in zip(before, mask.shape, strict=True))
        ] = mask
        n = chi - clo
        coarse = padded.reshape(int(n[0]), b, int(n[1]), b, int(n[2]), b).any(axis=(1, 3, 5))
        return tuple(slice(int(a), int(c)) for a, c in zip(clo, chi, strict=True)), coarse

    def taken(self, points: np.ndarray) -> np.ndarray:
        """Whether each voxel of ``points`` (N, 3) lies in a taken cell."""
        c = points // self.b
        return self.grid[c[:, 0], c[:, 1], c[:, 2]]

    def free(self, pieces: list[tuple[np.ndarray, np.ndarray]]) -> bool:
        for lo, mask in pieces:
            sl, m = self._coarse(lo, mask)
            if np.any(self.grid[sl] & m):
                return False
        return True

    def mark(self, pieces: list[tuple[np.ndarray, np.ndarray]]) -> None:
        for lo, mask in pieces:
            sl, m = self._coarse(lo, mask)
            self.grid[sl] |= m


# --------------------------------------------------------------------------- the layout


@dataclass(eq=False)
class SampleLayout:
    """A drawn sample: its objects and particle table; rendered on demand by slabs.

    Attributes
    ----------
    spec
        What it was drawn from.
    shape, pixel_spacing
        ``(Z, Y, X)`` and Å per voxel.
    classes
        Class id -> name (1..K particle classes, then ``membrane`` and ``fiducial``).
    particles
        The particle table (:mod:`faket_dask.particles`): particles, membranes, beads.
    templates
        Class name -> :class:`~faket_dask.templates.Template`.
    info
        What was drawn: counts per class, occupancy reached, grid factor, ``jammed``.
    """

    spec: SampleSpec | None
    shape: tuple[int, int, int]
    pixel_spacing: float
    classes: dict[int, str]
    particles: pd.DataFrame
    templates: dict[str, Template] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    objects: list[_Object] = field(default_factory=list, repr=False)
    solvent: tuple[float, float, float] = (0.0, 0.0, 20.0)  # density, rel. std, corr. (Å)
    _cache: _BoxCache = field(default_factory=_BoxCache, repr=False)
    _ylo: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    _yhi: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    @property
    def class_dtype(self) -> np.dtype:
        """uint8, or uint16 when there are more than 255 classes."""
        return np.dtype(np.uint8 if max(self.classes, default=0) < 256 else np.uint16)

    def _index(self) -> None:
        self._ylo = np.array([int(o.lo[1]) for o in self.objects], dtype=np.int64)
        self._yhi = np.array([int(o.hi[1]) for o in self.objects], dtype=np.int64)

    def render(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows ``[y0, y1)``: density (float32), class mask, instance mask (uint32)."""
        nz, ny, nx = self.shape
        y0, y1 = _check_rows(y0, y1, ny)
        rows = y1 - y0
        density = _solvent_rows(self, y0, y1)
        classes = np.zeros((nz, rows, nx), dtype=self.class_dtype)
        instances = np.zeros((nz, rows, nx), dtype=np.uint32)
        if len(self._ylo) != len(self.objects):
            self._index()
        hit = np.flatnonzero((self._ylo < y1) & (self._yhi > y0))
        ids = self.particles["id"].to_numpy()
        boxes: dict[int, RotatedBox] = {}
        missing = []
        for i in hit:
            obj = self.objects[i]
            if isinstance(obj, _Particle):
                box = self._cache.get(obj.index)
                if box is None:
                    missing.append(obj)
                else:
                    boxes[obj.index] = box
        for obj, box in zip(
            missing, _rotate_many([(o.template, o.quaternion) for o in missing]), strict=True
        ):
            boxes[obj.index] = box
            self._cache.put(obj.index, box)
        slab_lo = np.array([0, y0, 0])
        slab_hi = np.array([nz, y1, nx])
        for i in hit:
            obj = self.objects[i]
            lo = np.maximum(obj.lo, slab_lo)
            hi = np.minimum(obj.hi, slab_hi)
            if np.any(hi <= lo):
                continue
            if isinstance(obj, _Particle):
                dens, mask = obj.region(lo, hi, boxes[obj.index])
            else:
                dens, mask = obj.region(lo, hi)
            sl = tuple(
                slice(int(a), int(b)) for a, b in zip(lo - slab_lo, hi - slab_lo, strict=True)
            )
            np.copyto(density[sl], dens, where=mask)
            classes[sl][mask] = obj.class_id
            instances[sl][mask] = ids[i]
        return density, classes, instances

    def summary(self) -> dict[str, Any]:
        """A small JSON-ready description (for store attrs)."""
        return {
            "shape": list(self.shape),
            "pixel_spacing": self.pixel_spacing,
            "classes": {str(k): v for k, v in self.classes.items()},
            "seed": None if self.spec is None else self.spec.seed,
            "sample_id": None if self.spec is None else self.spec.sample_id,
            **self.info,
        }


def _check_rows(y0: int, y1: int, ny: int) -> tuple[int, int]:
    y0, y1 = int(y0), int(y1)
    if not 0 <= y0 < y1 <= ny:
        raise InputError(f"slab rows [{y0}, {y1}) are outside the volume's 0..{ny} rows")
    return y0, y1


# --------------------------------------------------------------------------- solvent


def _solvent_rows(layout: SampleLayout, y0: int, y1: int) -> np.ndarray:
    """Solvent density for rows ``[y0, y1)``: trilinear noise on a coarse lattice.

    Lattice planes at ``y = k * s`` (``s`` = correlation length in voxels) are drawn from
    streams keyed by ``(seed, sample_id, "solvent", k)``; every voxel is an elementwise
    interpolation of its neighbours, so any slab gives the same bytes as the whole.
    """
    nz, _, nx = layout.shape
    level, rel, corr = layout.solvent
    out = np.zeros((nz, y1 - y0, nx), dtype=np.float32)
    if level <= 0:
        return out
    if rel <= 0:
        out[...] = np.float32(level)
        return out
    spec = layout.spec
    seed, sid = (0, 0) if spec is None else (spec.seed, spec.sample_id)
    s = max(1, round(corr / layout.pixel_spacing))
    nzc, nxc = (nz - 1) // s + 2, (nx - 1) // s + 2
    iz, tz = np.divmod(np.arange(nz), s)
    ix, tx = np.divmod(np.arange(nx), s)
    fz = (tz / s)[:, None]
    fx = (tx / s)[None, :]

    planes: dict[int, np.ndarray] = {}

    def plane(k: int) -> np.ndarray:
        if k not in planes:
            p = keyed_rng(seed, sid, "solvent", k).standard_normal((nzc, nxc))
            a = (1.0 - fz) * p[iz] + fz * p[iz + 1]  # (nz, nxc)
            planes[k] = (1.0 - fx) * a[:, ix] + fx * a[:, ix + 1]  # (nz, nx)
        return planes[k]

    for j, y in enumerate(range(y0, y1)):
        k, ty = divmod(y, s)
        fy = ty / s
        v = (1.0 - fy) * plane(k) + fy * plane(k + 1)
        out[:, j, :] = np.clip(level * (1.0 + rel * v), 0.0, None)
        for old in [key for key in planes if key < k]:
            del planes[old]
    return out


# --------------------------------------------------------------------------- drawing


def _class_table(cfg: SampleConfig) -> tuple[list[ParticleClassConfig], dict[int, str]]:
    classes = cfg.resolved_particles()
    ids = {i + 1: c.name for i, c in enumerate(classes)}
    ids[len(classes) + 1] = MEMBRANE
    ids[len(classes) + 2] = FIDUCIAL
    return classes, ids


def _place(
    occ: _Occupancy,
    rng: np.random.Generator,
    pieces_at: Any,
    low: np.ndarray,
    high: np.ndarray,
    probe: np.ndarray | None,
    attempts: int,
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]] | None:
    """Try up to ``attempts`` uniform integer positions in ``[low, high]``; first free wins.

    ``pieces_at(pos)`` gives the object's mask pieces at ``pos``; ``probe`` is an offset
    from ``pos`` that lies inside the mask (a cheap first test), or None.
    """
    tried = 0
    while tried < attempts:
        n = min(_BATCH, attempts - tried)
        cand = rng.integers(low, high + 1, size=(n, 3), dtype=np.int64)
        tried += n
        if probe is not None:
            cand = cand[~occ.taken(cand + probe)]
        for pos in cand:
            pieces = pieces_at(pos)
            if not any(m.any() for _, m in pieces):  # wholly outside the volume (a big shell)
                continue
            if occ.free(pieces):
                occ.mark(pieces)
                return pos, pieces
    return None


def _nearest_inside(box: RotatedBox) -> np.ndarray:
    """Offset (from the particle position) of the mask voxel closest to the position."""
    idx = np.argwhere(box.mask)
    rel = idx + box.offset
    return rel[np.argmin((rel**2).sum(axis=1))]


def _draw_membranes(
    spec: SampleSpec,
    rng: np.random.Generator,
    occ: _Occupancy,
    class_id: int,
) -> list[_Object]:
    cfg = spec.sample.membranes
    ps = spec.pixel_spacing
    shape = spec.shape
    half = max(cfg.thickness / 2.0 / ps, math.sqrt(3) / 2)  # at least one voxel thick
    attempts = spec.sample.placement_attempts
    full = np.array(shape, dtype=np.int64) - 1
    out: list[_Object] = []
    for k in range(cfg.vesicles):
        radius = rng.uniform(*cfg.vesicle_radius) / ps

        def make(pos: np.ndarray, radius: float = radius) -> _Vesicle:
            return _Vesicle(
                class_id=class_id,
                centre=pos.astype(np.float64),
                radius=radius,
                half=half,
                density=cfg.density,
                leaflets=cfg.leaflets,
                shape=shape,
            )

        placed = _place(
            occ, rng, lambda p: list(make(p).chunks()), np.zeros(3, np.int64), full, None, attempts
        )
        if placed is None:
            raise InputError(
                f"could not place vesicle {k + 1} of {cfg.vesicles} without overlap; lower "
                "sample.membranes.vesicles or vesicle_radius, or enlarge the volume"
            )
        out.append(make(placed[0]))
    for k in range(cfg.planar):
        radius = rng.uniform(*cfg.planar_radius) / ps
        v = rng.standard_normal(3)
        normal = v / np.linalg.norm(v)

        def make_disc(
            pos: np.ndarray, radius: float = radius, normal: np.ndarray = normal
        ) -> _Disc:
            return _Disc(
                class_id=class_id,
                centre=pos.astype(np.float64),
                normal=normal,
                radius=radius,
                half=half,
                density=cfg.density,
                leaflets=cfg.leaflets,
                shape=shape,
            )

        placed = _place(
            occ,
            rng,
            lambda p: list(make_disc(p).chunks()),
            np.zeros(3, np.int64),
            full,
            None,
            attempts,
        )
        if placed is None:
            raise InputError(
                f"could not place planar membrane {k + 1} of {cfg.planar} without overlap; "
                "lower sample.membranes.planar or planar_radius, or enlarge the volume"
            )
        out.append(make_disc(placed[0]))
    return out


def _draw_beads(
    spec: SampleSpec, rng: np.random.Generator, occ: _Occupancy, class_id: int
) -> list[_Object]:
    cfg = spec.sample.fiducials
    ps = spec.pixel_spacing
    shape = spec.shape
    radius = cfg.radius / ps
    r_in = math.ceil(radius)
    low = np.full(3, r_in, dtype=np.int64)
    high = np.array(shape, dtype=np.int64) - 1 - r_in
    if cfg.count and np.any(high < low):
        raise InputError(
            f"gold beads of radius {cfg.radius} Å do not fit in a {shape} volume; "
            "lower sample.fiducials.radius or thicken the sample"
        )
    out: list[_Object] = []
    for k in range(cfg.count):

        def make(pos: np.ndarray) -> _Bead:
            return _Bead(
                class_id=class_id,
                centre=pos.astype(np.float64),
                radius=radius,
                density=cfg.density,
                shape=shape,
            )

        placed = _place(
            occ,
            rng,
            lambda p: list(make(p).chunks()),
            low,
            high,
            np.zeros(3, np.int64),
            spec.sample.placement_attempts,
        )
        if placed is None:
            raise InputError(
                f"could not place gold bead {k + 1} of {cfg.count} without overlap; lower "
                "sample.fiducials.count or enlarge the volume"
            )
        out.append(make(placed[0]))
    return out


def _load_templates(spec: SampleSpec, classes: list[ParticleClassConfig]) -> dict[str, Template]:
    out = {}
    for c in classes:
        src = c.template if c.template.startswith("builtin:") else spec.resolve(c.template)
        try:
            out[c.name] = load_template(
                src,
                spec.pixel_spacing,
                name=c.name,
                threshold=c.threshold,
                density=c.density,
                source_pixel_spacing=c.pixel_spacing,
            )
        except InputError as err:
            raise InputError(f"particle class {c.name!r}: {err}") from None
    return out


def _threads() -> int:
    """Threads for rotating templates (SciPy's ndimage releases the GIL)."""
    env = os.environ.get("FAKET_DASK_SAMPLE_THREADS")
    if env:
        return max(1, int(env))
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def _rotate_many(items: list[tuple[Template, np.ndarray]]) -> list[RotatedBox]:
    """Rotate templates by quaternions, in threads; the same bytes as one by one."""

    def one(item: tuple[Template, np.ndarray]) -> RotatedBox:
        return rotate_template(item[0], quaternions_to_matrices(item[1])[0])

    n = _threads()
    if n == 1 or len(items) < 4:
        return [one(it) for it in items]
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, items))


def _draw_particles(
    spec: SampleSpec,
    rng: np.random.Generator,
    occ: _Occupancy,
    classes: list[ParticleClassConfig],
    templates: dict[str, Template],
    cache: _BoxCache,
    info: dict[str, Any],
) -> list[_Particle]:
    """Particles: classes and orientations from their own streams, positions from ``rng``.

    Particle ``i``'s class (occupancy mode) and orientation are the ``i``-th draws of streams
    keyed by ``(seed, sample_id, "classes")`` and ``(seed, sample_id, "orientations")``,
    drawn in blocks of ``_BATCH``; so a block's rotations are computed ahead, in threads,
    without changing any draw. Positions are drawn from ``rng`` as particles are placed.
    """
    shape = np.array(spec.shape, dtype=np.int64)
    attempts = spec.sample.placement_attempts
    target = spec.sample.resolved_occupancy()
    out: list[_Particle] = []
    covered = 0
    orient_rng = keyed_rng(spec.seed, spec.sample_id, "orientations")
    class_rng = keyed_rng(spec.seed, spec.sample_id, "classes")

    def place_one(ci: int, q: np.ndarray, box: RotatedBox, exact: bool) -> bool:
        nonlocal covered
        c = classes[ci]
        low = -box.offset
        high = shape - (box.offset + np.array(box.shape))
        if np.any(high < low):
            raise InputError(
                f"particle class {c.name!r} ({box.shape} voxels when rotated) does not fit in "
                f"the {tuple(spec.shape)} volume; use a smaller template or a thicker sample"
            )
        probe = _nearest_inside(box)
        placed = _place(
            occ, rng, lambda p: [(p + box.offset, box.mask)], low, high, probe, attempts
        )
        if placed is None:
            if exact:
                raise InputError(
                    f"could not place particle {sum(1 for p in out if p.class_id == ci + 1) + 1}"
                    f" of class {c.name!r} without overlap after {attempts} tries; lower the "
                    "counts or sample.occupancy, or enlarge the volume"
                )
            return False
        index = len(out)
        part = _Particle(
            index=index,
            class_id=ci + 1,
            template=templates[c.name],
            quaternion=q,
            position=placed[0],
            box_offset=box.offset,
            box_shape=np.array(box.shape, dtype=np.int64),
            cache=cache,
            voxels=int(box.mask.sum()),
        )
        cache.put(index, box)
        covered += part.voxels
        out.append(part)
        return True

    def block(cis: list[int]) -> list[tuple[int, np.ndarray, RotatedBox]]:
        qs = random_quaternions(orient_rng, _BATCH)[: len(cis)]
        boxes = _rotate_many(
            [(templates[classes[ci].name], q) for ci, q in zip(cis, qs, strict=True)]
        )
        return list(zip(cis, qs, boxes, strict=True))

    # exact counts first, larger templates first
    counted = [i for i, c in enumerate(classes) if c.count]
    counted.sort(key=lambda i: -templates[classes[i].name].volume_voxels)
    plan = [ci for ci in counted for _ in range(int(classes[ci].count or 0))]
    for k in range(0, len(plan), _BATCH):
        for ci, q, box in block(plan[k : k + _BATCH]):
            place_one(ci, q, box, exact=True)
    # then fill to the target occupancy by abundance
    loose = [i for i, c in enumerate(classes) if c.count is None]
    info["jammed"] = False
    if target is not None and target > 0 and loose:
        weights = np.array([classes[i].abundance or 1.0 for i in loose], dtype=np.float64)
        cum = np.cumsum(weights / weights.sum())
        goal = target * float(np.prod(shape))
        while covered < goal and not info["jammed"]:
            picks = np.minimum(
                np.searchsorted(cum, class_rng.random(_BATCH), side="right"), len(loose) - 1
            )
            for ci, q, box in block([loose[int(j)] for j in picks]):
                if covered >= goal:
                    break
                if not place_one(ci, q, box, exact=False):
                    info["jammed"] = True
                    warnings.warn(
                        f"sample {spec.sample_id}: occupancy stopped at "
                        f"{covered / np.prod(shape):.3f} of the {target} asked: a "
                        f"{classes[ci].name!r} particle found no free place; lower "
                        "sample.occupancy",
                        stacklevel=2,
                    )
                    break
    info["particle_occupancy"] = covered / float(np.prod(shape))
    return out


def build_layout(spec: SampleSpec) -> SampleLayout | GrandModelLayout:
    """Draw a sample's objects and particle table (no volume is rendered).

    An imported grand model (``sample.grand_model``) gives a :class:`GrandModelLayout`.

    Raises
    ------
    InputError
        A template cannot be read, an object does not fit, counts cannot be placed.
    """
    cfg = spec.sample
    if cfg.grand_model:
        return import_grand_model(
            spec.resolve(cfg.grand_model),
            class_mask=spec.resolve(cfg.grand_model_class_mask)
            if cfg.grand_model_class_mask
            else None,
            instance_mask=(
                spec.resolve(cfg.grand_model_instance_mask)
                if cfg.grand_model_instance_mask
                else None
            ),
            particles=spec.resolve(cfg.grand_model_particles)
            if cfg.grand_model_particles
            else None,
            pixel_spacing=spec.pixel_spacing,
            class_names={i + 1: n for i, n in enumerate(cfg.grand_model_classes)} or None,
            expected_yx=spec.shape[1:],
        )
    nz, ny, nx = spec.shape
    if min(spec.shape) < 1:
        raise InputError(f"the sample volume {spec.shape} is empty")
    classes, class_ids = _class_table(cfg)
    membrane_id = len(classes) + 1
    fiducial_id = len(classes) + 2
    templates = _load_templates(spec, classes)
    rng = keyed_rng(spec.seed, spec.sample_id, "sample")
    occ = _Occupancy(spec.shape)
    cache = _BoxCache()
    info: dict[str, Any] = {"occupancy_grid_factor": occ.b}
    membranes = _draw_membranes(spec, rng, occ, membrane_id)
    beads = _draw_beads(spec, rng, occ, fiducial_id)
    parts = _draw_particles(spec, rng, occ, classes, templates, cache, info)
    del occ
    objects: list[_Object] = [*parts, *membranes, *beads]
    n = len(objects)
    ps = spec.pixel_spacing
    positions = np.zeros((n, 3))
    quats = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    radii = np.zeros(n)
    for i, o in enumerate(objects):
        if isinstance(o, _Particle):
            positions[i] = o.position[::-1]
            quats[i] = o.quaternion
        elif isinstance(o, _Vesicle | _Bead):
            positions[i] = o.centre[::-1]
            radii[i] = o.radius * ps
        elif isinstance(o, _Disc):
            positions[i] = o.centre[::-1]
            radii[i] = o.radius * ps
            quats[i] = _quaternion_z_to(o.normal[::-1])
    voxels = np.array([_count_voxels(o) for o in objects], dtype=np.int64)
    table = table_from_arrays(
        ids=np.arange(1, n + 1),
        class_ids=np.array([o.class_id for o in objects], dtype=np.int64),
        class_names=[class_ids[o.class_id] for o in objects],
        kinds=[o.kind for o in objects],
        positions_xyz=positions,
        quaternions=quats,
        pixel_spacing=ps,
        voxels=voxels,
        radii_angst=radii,
    )
    counts = table["class_name"].value_counts()
    info["counts"] = {name: int(counts.get(name, 0)) for name in class_ids.values()}
    layout = SampleLayout(
        spec=spec,
        shape=(nz, ny, nx),
        pixel_spacing=ps,
        classes=class_ids,
        particles=table,
        templates=templates,
        info=info,
        objects=objects,
        solvent=(cfg.solvent, cfg.solvent_noise, cfg.solvent_correlation),
        _cache=cache,
    )
    layout._index()
    return layout


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
    return q / np.linalg.norm(q)


# --------------------------------------------------------------------------- imported models


@dataclass(eq=False)
class GrandModelLayout:
    """An imported grand model: a volume MRC (+ optional masks and particle list), read by slabs."""

    shape: tuple[int, int, int]
    pixel_spacing: float
    classes: dict[int, str]
    particles: pd.DataFrame
    volume_path: str
    class_mask_path: str | None = None
    instance_mask_path: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    spec: SampleSpec | None = None

    @property
    def class_dtype(self) -> np.dtype:
        """uint8, or uint16 when there are more than 255 classes."""
        return np.dtype(np.uint8 if max(self.classes, default=0) < 256 else np.uint16)

    def render(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows ``[y0, y1)`` read from the MRC files (memory-mapped)."""
        import mrcfile

        nz, ny, nx = self.shape
        y0, y1 = _check_rows(y0, y1, ny)
        with mrcfile.mmap(self.volume_path, mode="r", permissive=True) as m:
            density = np.array(m.data[:, y0:y1, :], dtype=np.float32)
        classes = np.zeros((nz, y1 - y0, nx), dtype=self.class_dtype)
        instances = np.zeros((nz, y1 - y0, nx), dtype=np.uint32)
        if self.class_mask_path:
            with mrcfile.mmap(self.class_mask_path, mode="r", permissive=True) as m:
                classes[...] = np.rint(np.asarray(m.data[:, y0:y1, :])).astype(self.class_dtype)
        if self.instance_mask_path:
            with mrcfile.mmap(self.instance_mask_path, mode="r", permissive=True) as m:
                instances[...] = np.rint(np.asarray(m.data[:, y0:y1, :])).astype(np.uint32)
        return density, classes, instances

    def summary(self) -> dict[str, Any]:
        """A small JSON-ready description (for store attrs)."""
        return {
            "shape": list(self.shape),
            "pixel_spacing": self.pixel_spacing,
            "classes": {str(k): v for k, v in self.classes.items()},
            "imported": self.volume_path,
            **self.info,
        }


def _mrc_header(path: str) -> tuple[tuple[int, int, int], float | None]:
    import mrcfile

    if not Path(path).is_file():
        raise InputError(f"grand model file {path} does not exist; check the path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.mmap(path, mode="r", permissive=True) as m:
                shape = tuple(int(s) for s in m.data.shape)
                voxel = float(m.voxel_size.x)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"{path} is not a readable MRC file ({err})") from None
    if len(shape) != 3:
        raise InputError(f"{path}: a grand model must be a 3-D (Z, Y, X) volume, got {shape}")
    return shape, (voxel if voxel > 0 else None)  # type: ignore[return-value]


def _has_text(path: Path, probe: int = 1 << 16) -> bool:
    """Whether a text file holds anything but whitespace in its first ``probe`` bytes."""
    with open(path, "rb") as f:
        return bool(f.read(probe).strip())


def import_grand_model(
    volume: str | Path,
    *,
    class_mask: str | Path | None = None,
    instance_mask: str | Path | None = None,
    particles: str | Path | None = None,
    pixel_spacing: float | None = None,
    class_names: dict[int, str] | None = None,
    expected_yx: tuple[int, int] | None = None,
) -> GrandModelLayout:
    """Use an existing grand model: a volume MRC, optional class/instance masks, a particle list.

    The pixel spacing comes from the volume's header, else ``pixel_spacing``; when both
    exist they must agree within 1%. Class names come from ``class_names`` (mask label ->
    name; the particle list's rows are matched to them by name), else from the particle
    list's ``class_id``/``class_name`` pairs, else ``class<N>``. Without an instance mask the
    instance mask is all zero (unknown). Particle lists are taken as given: positions must be
    voxels of this volume (SHREC'21's lists, for example, are in its 512^3 frame).
    """
    volume = str(volume)
    shape, header = _mrc_header(volume)
    for path in (class_mask, instance_mask):
        if path is not None:
            mshape, _ = _mrc_header(str(path))
            if mshape != shape:
                raise InputError(f"{path}: mask shape {mshape} differs from the volume's {shape}")
    if expected_yx is not None and tuple(shape[1:]) != tuple(expected_yx):
        raise InputError(
            f"grand model {volume} is (Z, Y, X) = {shape} but the detector (tilts.shape) is "
            f"{tuple(expected_yx)}; set tilts.shape to [{shape[1]}, {shape[2]}]"
        )
    ps = header if header is not None else pixel_spacing
    if ps is None:
        raise InputError(f"{volume}: the MRC header has no voxel size; set tilts.pixel_spacing")
    if (
        header is not None
        and pixel_spacing is not None
        and abs(header - pixel_spacing) > 0.01 * header
    ):
        raise InputError(
            f"{volume}: voxel size {header:g} Å differs from tilts.pixel_spacing "
            f"{pixel_spacing:g} Å; set tilts.pixel_spacing to {header:g}"
        )
    table = empty_table()
    if particles is not None:
        empty = InputError(
            f"{particles}: the particle list holds no particles; give a list with at least "
            "one particle, or remove sample.grand_model_particles"
        )
        if Path(particles).is_file() and not _has_text(Path(particles)):
            raise empty  # before the parsers, whose errors on empty files say less
        table = read_particle_list(
            particles, pixel_spacing=ps, shape=shape, class_names=class_names
        )
        if not len(table):
            raise empty
    if class_names and len(table):  # match the list's classes to the mask labels by name
        by_name = {v: k for k, v in class_names.items()}
        matched = [by_name.get(str(n)) for n in table["class_name"]]
        table["class_id"] = [
            m if m is not None else int(c) for m, c in zip(matched, table["class_id"], strict=True)
        ]
    names: dict[int, str] = {}
    if len(table):
        pairs = table[["class_id", "class_name"]].drop_duplicates()
        names.update(
            {int(i): str(n) for i, n in zip(pairs["class_id"], pairs["class_name"], strict=True)}
        )
    names.update(class_names or {})
    if class_mask is not None:
        import mrcfile

        top = 0
        with mrcfile.mmap(str(class_mask), mode="r", permissive=True) as m:
            for y0 in range(0, shape[1], 64):
                top = max(top, int(np.rint(np.asarray(m.data[:, y0 : y0 + 64]).max())))
        for k in range(1, top + 1):
            names.setdefault(k, f"class{k}")
    return GrandModelLayout(
        shape=shape,
        pixel_spacing=float(ps),
        classes=dict(sorted(names.items())),
        particles=table,
        volume_path=volume,
        class_mask_path=None if class_mask is None else str(class_mask),
        instance_mask_path=None if instance_mask is None else str(instance_mask),
    )


# --------------------------------------------------------------------------- rendering


class Sample(NamedTuple):
    """A whole rendered sample (small volumes only; large ones go slab by slab)."""

    density: np.ndarray
    class_mask: np.ndarray
    instance_mask: np.ndarray
    particles: pd.DataFrame
    layout: SampleLayout | GrandModelLayout


def render_slab(
    layout: SampleLayout | GrandModelLayout,
    y0: int,
    y1: int,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray | torch.Tensor, np.ndarray, np.ndarray]:
    """Render rows ``[y0, y1)`` of a sample: ``(density, class_mask, instance_mask)``.

    Shapes are ``(Z, y1 - y0, X)``. The masks are NumPy arrays (class: uint8/uint16,
    instance: uint32). The density is float32 NumPy when ``device`` is None, else a
    ``torch.Tensor`` on ``device`` (ready for :func:`faket_dask.projection.project_slab`).
    Slabs of any size concatenate to the same bytes as :func:`build_sample`.
    """
    density, classes, instances = layout.render(y0, y1)
    if device is None:
        return density, classes, instances
    import torch

    return torch.from_numpy(density).to(device), classes, instances


def default_slab_size(shape: tuple[int, int, int], budget: int = SLAB_BYTES) -> int:
    """Y rows per slab keeping density + masks (about 9 bytes a voxel) under ``budget``."""
    nz, ny, nx = shape
    return int(max(1, min(ny, budget // max(1, 9 * nz * nx))))


def iter_slabs(
    layout: SampleLayout | GrandModelLayout,
    slab_size: int | None = None,
    device: str | torch.device | None = None,
) -> Iterator[tuple[int, int, Any, np.ndarray, np.ndarray]]:
    """Yield ``(y0, y1, density, class_mask, instance_mask)`` for consecutive slabs."""
    ny = layout.shape[1]
    if slab_size is None:
        cfg_size = layout.spec.sample.slab_size if layout.spec is not None else None
        slab_size = cfg_size or default_slab_size(layout.shape)
    for y0 in range(0, ny, int(slab_size)):
        y1 = min(ny, y0 + int(slab_size))
        yield (y0, y1, *render_slab(layout, y0, y1, device))


def build_sample(
    spec: SampleSpec | SampleLayout | GrandModelLayout, slab_size: int | None = None
) -> Sample:
    """Draw and render a whole sample: the layout, then every slab, concatenated along Y.

    For volumes that fit in memory (tests, demos). Large samples should use
    :func:`build_layout` and :func:`render_slab` (or :func:`iter_slabs`) instead.
    """
    layout = build_layout(spec) if isinstance(spec, SampleSpec) else spec
    nz, ny, nx = layout.shape
    density = np.empty((nz, ny, nx), dtype=np.float32)
    classes = np.empty((nz, ny, nx), dtype=layout.class_dtype)
    instances = np.empty((nz, ny, nx), dtype=np.uint32)
    for y0, y1, d, c, i in iter_slabs(layout, slab_size):
        density[:, y0:y1] = d
        classes[:, y0:y1] = c
        instances[:, y0:y1] = i
    return Sample(density, classes, instances, layout.particles, layout)
