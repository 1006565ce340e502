"""Batched rendering of particles into a slab: rotated boxes as voxel lists, scattered at once.

A rotated particle (a :class:`~faket_dask.stages.sample.rotation.VoxelBox`, its voxels sorted
by Y row) becomes a :class:`SparseBox` by indexing its rows. The boxes a slab needs are
concatenated into
one :class:`BoxBank` (built once per layout when boxes are shared on an orientation grid); the
voxels of every particle that meets the slab are then gathered and scattered into the slab's
density, class and instance arrays in a few tensor operations, on the device of the density.
Particles never overlap, so the order of the writes does not matter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from faket_dask.stages.sample.objects import _BoxCache, _Object, _Particle
from faket_dask.stages.sample.rotation import VoxelBox
from faket_dask.stages.sample.spec import keyed_rng
from faket_dask.stages.templates import Template

if TYPE_CHECKING:
    from faket_dask.stages.sample.layout import SampleLayout

#: Rotates ``(template, quaternion)`` pairs into voxel lists (the layout's rotation).
Rotate = Callable[[list[tuple[Template, np.ndarray]]], list[VoxelBox]]

__all__ = ["BoxBank", "SparseBox", "scatter_particles", "sparse_box"]


@dataclass(frozen=True, eq=False)
class SparseBox:
    """A rotated box's mask voxels, sorted by Y row.

    Attributes
    ----------
    first_row
        Y offset (from the particle's position) of the box's first row.
    zyx
        ``(m, 3)`` int32 ``(z, y, x)`` offsets of the voxels from the position.
    values
        ``(m,)`` float32 densities.
    row_ptr
        ``(rows + 1,)`` int64: row ``r`` of the box holds voxels ``row_ptr[r]:row_ptr[r + 1]``.
    """

    first_row: int
    zyx: np.ndarray
    values: np.ndarray
    row_ptr: np.ndarray

    @property
    def rows(self) -> int:
        """Y rows of the box."""
        return len(self.row_ptr) - 1

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return self.zyx.nbytes + self.values.nbytes + self.row_ptr.nbytes


def sparse_box(box: VoxelBox) -> SparseBox:
    """The :class:`SparseBox` of a rotated particle (its voxels are already sorted by row)."""
    first = int(box.offset[1])
    zyx = box.zyx.astype(np.int32)
    row_ptr = np.searchsorted(zyx[:, 1], np.arange(first, first + box.shape[1] + 1))
    return SparseBox(first, zyx, box.values, row_ptr.astype(np.int64))


class BoxBank:
    """Sparse boxes concatenated for a volume ``nx`` voxels wide.

    Each voxel is kept as its Z offset and its in-plane offset ``dy * nx + dx`` (int32) from
    the particle's position, with its density, so a slab's flat index is two gathers away.
    """

    def __init__(self, boxes: list[SparseBox], nx: int) -> None:
        self.nx = int(nx)
        self.first_row = np.array([b.first_row for b in boxes], dtype=np.int64)
        self.rows = np.array([b.rows for b in boxes], dtype=np.int64)
        sizes = np.array([len(b.values) for b in boxes], dtype=np.int64)
        base = np.cumsum(sizes) - sizes
        self.row_base = np.cumsum(self.rows + 1) - (self.rows + 1)
        ptrs = [b.row_ptr + o for b, o in zip(boxes, base, strict=True)]
        self.row_ptr = np.concatenate(ptrs) if ptrs else np.zeros(0, np.int64)
        zyx = np.concatenate([b.zyx for b in boxes]) if boxes else np.zeros((0, 3), np.int32)
        self.dz = np.ascontiguousarray(zyx[:, 0])
        self.dyx = (zyx[:, 1] * self.nx + zyx[:, 2]).astype(np.int32)
        vals = [b.values for b in boxes]
        self.values = np.concatenate(vals) if vals else np.zeros(0, np.float32)

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return self.dz.nbytes + self.dyx.nbytes + self.values.nbytes + self.row_ptr.nbytes


def _ragged(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + n)`` for every pair (int64)."""
    ends = np.cumsum(counts)
    shift = np.repeat(starts - (ends - counts), counts)
    return np.asarray(np.arange(int(ends[-1]) if len(ends) else 0, dtype=np.int64) + shift)


def scatter_particles(
    slab: tuple[np.ndarray, np.ndarray, np.ndarray],
    y0: int,
    bank: BoxBank,
    which: np.ndarray,
    positions: np.ndarray,
    labels: tuple[np.ndarray, np.ndarray],
) -> None:
    """Write particles into a slab (in place).

    Parameters
    ----------
    slab
        ``(density, class_mask, instance_mask)`` C-contiguous arrays of shape
        ``(Z, rows, X)`` holding rows ``[y0, y0 + rows)`` of the volume.
    y0
        The slab's first row.
    bank
        The sparse boxes (built for this ``X``).
    which
        ``(n,)`` the bank box of each particle that meets the slab.
    positions
        ``(n, 3)`` int64 ``(z, y, x)`` positions of those particles.
    labels
        ``(n,)`` class ids and ``(n,)`` instance ids of those particles.
    """
    density, classes, instances = slab
    rows, nx = density.shape[1:]
    if not len(which):
        return
    top = positions[:, 1] + bank.first_row[which]  # volume row of each box's first row
    r0 = np.clip(y0 - top, 0, bank.rows[which])
    r1 = np.clip(y0 + rows - top, 0, bank.rows[which])
    a = bank.row_ptr[bank.row_base[which] + r0]
    counts = bank.row_ptr[bank.row_base[which] + r1] - a
    idx = _ragged(a, counts)
    base = (positions[:, 0] * rows + (positions[:, 1] - y0)) * nx + positions[:, 2]
    flat = np.repeat(base, counts)
    flat += bank.dz[idx].astype(np.int64) * (rows * nx)
    flat += bank.dyx[idx]
    density.reshape(-1)[flat] = bank.values[idx]
    classes.reshape(-1)[flat] = np.repeat(labels[0].astype(classes.dtype), counts)
    instances.reshape(-1)[flat] = np.repeat(labels[1].astype(instances.dtype), counts)


class Renderer:
    """Renders a layout's rows: the solvent, its particles in batches, then the other objects.

    Parameters
    ----------
    cache
        The layout's rotated boxes (filled while placing).
    rotate
        Rotates templates for particles whose boxes are no longer cached.
    """

    def __init__(self, cache: _BoxCache, rotate: Rotate) -> None:
        self.cache, self.rotate = cache, rotate
        self.grid_bank: BoxBank | None = None
        self.box_of: dict[int, int] = {}

    def rows(self, layout: SampleLayout, y0: int, y1: int) -> tuple[np.ndarray, ...]:
        """Rows ``[y0, y1)`` of ``layout``: density, class mask, instance mask, ``(Z, rows, X)``."""
        nz, _, nx = layout.shape
        slab = (
            solvent_rows(layout, y0, y1),
            np.zeros((nz, y1 - y0, nx), dtype=layout.class_dtype),
            np.zeros((nz, y1 - y0, nx), dtype=np.uint32),
        )
        hit = np.flatnonzero((layout._ylo < y1) & (layout._yhi > y0))
        ids = layout.particles["id"].to_numpy()
        parts = [i for i in hit if isinstance(layout.objects[i], _Particle)]
        particles = [p for p in (layout.objects[i] for i in parts) if isinstance(p, _Particle)]
        bank, which = self.bank(layout.objects, particles, nx)
        pos = np.array([p.position for p in particles], dtype=np.int64).reshape(-1, 3)
        cls = np.array([p.class_id for p in particles], dtype=np.int64)
        scatter_particles(slab, y0, bank, which, pos, (cls, ids[parts]))
        for i in hit:
            if not isinstance(layout.objects[i], _Particle):
                _paint(slab, y0, layout.objects[i], int(ids[i]))
        return slab

    def bank(
        self, objects: list[_Object], parts: list[_Particle], nx: int
    ) -> tuple[BoxBank, np.ndarray]:
        """The sparse boxes of ``parts`` and the box of each one in it."""
        if parts and parts[0].shared is not None:  # an orientation grid: one bank per layout
            if self.grid_bank is None:
                boxes = {id(p.shared): p.shared for p in objects if isinstance(p, _Particle)}
                self.box_of = {k: j for j, k in enumerate(boxes)}
                self.grid_bank = BoxBank([sparse_box(b) for b in boxes.values() if b], nx)
            return self.grid_bank, np.array([self.box_of[id(p.shared)] for p in parts])
        cached = [self.cache.get(p.index) for p in parts]
        todo = [p for p, b in zip(parts, cached, strict=True) if b is None]
        again = self.rotate([(p.template, p.quaternion) for p in todo])  # no longer cached
        for p, box in zip(todo, again, strict=True):
            self.cache.put(p.index, box)  # for the next slab it meets
        new = iter(again)
        out = [sparse_box(b if b is not None else next(new)) for b in cached]
        return BoxBank(out, nx), np.arange(len(parts))


def _paint(slab: tuple[np.ndarray, ...], y0: int, obj: _Object, label: int) -> None:
    """Write a membrane or bead into the slab arrays."""
    density, classes, instances = slab
    nz, rows, nx = density.shape
    slab_lo = np.array([0, y0, 0])
    lo = np.maximum(obj.lo, slab_lo)
    hi = np.minimum(obj.hi, slab_lo + np.array([nz, rows, nx]))
    if np.any(hi <= lo):
        return
    dens, mask = obj.region(lo, hi)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo - slab_lo, hi - slab_lo, strict=True))
    np.copyto(density[sl], dens, where=mask)
    classes[sl][mask] = obj.class_id
    instances[sl][mask] = label


def solvent_rows(layout: SampleLayout, y0: int, y1: int) -> np.ndarray:
    """Solvent density for rows ``[y0, y1)`` (float32, ``(Z, rows, X)``).

    Lattice planes at ``y = k * s`` (``s`` = correlation length in voxels) are drawn from
    streams keyed by ``(seed, sample_id, "solvent", k)``, mapped to ``max(0, solvent * (1 +
    solvent_noise * n))`` and interpolated bilinearly to ``A_k`` on ``(Z, X)`` in float32;
    row ``y = k s + r`` is ``A_k + (A_{k+1} - A_k) * (r / s)`` (one float32 pass per row,
    non-negative), so any slab gives the same bytes as the whole.
    """
    nz, _, nx = layout.shape
    level, rel, corr = layout.solvent
    out = np.empty((nz, y1 - y0, nx), dtype=np.float32)
    if level <= 0 or rel <= 0:
        out.fill(max(level, 0.0))
        return out
    spec = layout.spec
    seed, sid = (0, 0) if spec is None else (spec.seed, spec.sample_id)
    s = max(1, round(corr / layout.pixel_spacing))
    nzc, nxc = (nz - 1) // s + 2, (nx - 1) // s + 2

    def up(a: np.ndarray, n: int) -> np.ndarray:
        """Linear interpolation by ``s`` along the last axis to ``n`` samples (float32)."""
        out = np.empty((*a.shape[:-1], n), dtype=np.float32)
        step = a[..., 1:] - a[..., :-1]
        for r in range(min(s, n)):
            m = len(range(r, n, s))
            np.add(a[..., :m], step[..., :m] * np.float32(r / s), out=out[..., r::s])
        return out

    def plane(k: int) -> np.ndarray:
        p = keyed_rng(seed, sid, "solvent", k).standard_normal((nzc, nxc))
        lattice = np.clip(level * (1.0 + rel * p), 0.0, None).astype(np.float32)
        return up(up(lattice.T, nz).T.copy(), nx)  # (nz, nx), non-negative

    upper = plane(y0 // s)
    for k in range(y0 // s, (y1 - 1) // s + 1):
        lower, upper = upper, plane(k + 1)
        step = upper - lower
        for y in range(max(y0, k * s), min(y1, (k + 1) * s)):
            r = y - k * s
            if r == 0:
                out[:, y - y0] = lower
            else:
                np.add(lower, step * np.float32(r / s), out=out[:, y - y0])
    return out
