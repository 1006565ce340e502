"""Rotated particles as voxel lists, rotated on the host (a compiled kernel) or on a device.

A rotated particle is the set of output voxels ``o`` (offsets from its position, ``(z, y,
x)``) whose trilinear interpolation of the template at ``p = m o + c`` lies above the
template's contour level (``m``: the rotation on ``(z, y, x)`` offsets, ``c``: the template's
reference voxel), with those interpolated densities: the definition of
:func:`~faket_dask.stages.templates.rotate_template` (SciPy, order 1, float64, stored as
float32).

Two implementations of it, chosen by the device:

* host (``device`` None or ``"cpu"``): :func:`_interpolate_boxes`, a numba kernel that does
  SciPy's float64 operations in SciPy's order, so its voxels and float32 values are SciPy's
  byte for byte (tested against ``affine_transform``), 3-5x faster per rotation; it skips the
  cells whose eight corners are all zero (their value is exactly 0). Rotations run in chunks
  in threads (``FAKET_DASK_SAMPLE_THREADS``, default up to 8 cores; the kernel releases the
  GIL).
* a torch device (CUDA): :func:`rotate_batch` rotates many orientations of one template at
  once. Only candidate voxels are interpolated: every voxel that can pass the level lies
  within ``radius + sqrt(3)`` of the position (a cell corner inside the contour is within
  ``sqrt(3)`` of ``p``), a ball of offsets shared by every orientation; a candidate is
  interpolated only when the cell ``floor(p)`` has a corner inside the contour (one gather of
  a precomputed table; exact, since a cell whose corners all lie at or below the level
  interpolates to at most the level). Coordinates and weights are float64, so its voxels
  are the host's (tested) and its values agree to float64 rounding.

Each particle comes out as a :class:`VoxelBox`: its voxels sorted by ``(y, z, x)`` with their
densities, the form placement tests and the renderer scatters; its dense box (``mask``,
``density``) is built only when asked for.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from faket_dask.stages.particles import quaternions_to_matrices
from faket_dask.stages.sample._jit import kernel
from faket_dask.stages.sample._pool import map_threads
from faket_dask.stages.sample._pool import threads as _threads
from faket_dask.stages.templates import RotatedBox, Template, rotated_box_density

__all__ = [
    "CHUNK_SAMPLES",
    "Rotate",
    "VoxelBox",
    "rotate_batch",
    "rotate_items",
    "rotate_voxels",
    "voxel_box",
]

#: Candidate voxels (orientations x ball offsets) evaluated at a time on a device.
CHUNK_SAMPLES = 1 << 22
#: A template as the kernel reads it: flat density and live cells (padded), reach, shape.
_Flat = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
#: The eight cell corners ``(dz, dy, dx)``, in the order the interpolation reduces them.
_CORNERS = np.array([(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.int64)


@dataclass(frozen=True, eq=False)
class VoxelBox:
    """A rotated particle as a list of voxels.

    Attributes
    ----------
    zyx
        ``(m, 3)`` int8 (int16, int32 for large templates) offsets of its voxels from the
        particle's position, sorted by ``(y, z, x)``.
    values
        ``(m,)`` float32 densities, all above the template's level.
    """

    zyx: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        if self.zyx.dtype != np.int8 and int(np.abs(self.zyx).max(initial=0)) < 127:
            object.__setattr__(self, "zyx", self.zyx.astype(np.int8))  # 7 bytes a voxel

    @classmethod
    def bounded(
        cls, zyx: np.ndarray, values: np.ndarray, low: np.ndarray, high: np.ndarray
    ) -> VoxelBox:
        """A box whose lowest and highest voxel offsets ``(3,)`` are known (not searched)."""
        box = cls(zyx, values)
        box.__dict__["offset"] = np.asarray(low, dtype=np.int64)
        ext = np.asarray(high, dtype=np.int64) - low + 1
        box.__dict__["shape"] = (int(ext[0]), int(ext[1]), int(ext[2]))
        return box

    @functools.cached_property
    def offset(self) -> np.ndarray:
        """``(3,)`` int64 first voxel of the bounding box, from the position."""
        return np.asarray(self.zyx.min(axis=0), dtype=np.int64)

    @functools.cached_property
    def shape(self) -> tuple[int, int, int]:
        """Bounding box shape ``(z, y, x)``."""
        ext = self.zyx.max(axis=0).astype(np.int64) - self.offset + 1
        return int(ext[0]), int(ext[1]), int(ext[2])

    @property
    def count(self) -> int:
        """Voxels."""
        return len(self.values)

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return int(self.zyx.nbytes + self.values.nbytes)

    @functools.cached_property
    def _dense(self) -> tuple[np.ndarray, np.ndarray]:
        idx = tuple((self.zyx.astype(np.int64) - self.offset).T)
        mask = np.zeros(self.shape, dtype=bool)
        mask[idx] = True
        density = np.zeros(self.shape, dtype=np.float32)
        density[idx] = self.values
        return mask, density

    @property
    def mask(self) -> np.ndarray:
        """The bounding box's voxel mask (bool, built on first use)."""
        return self._dense[0]

    @property
    def density(self) -> np.ndarray:
        """The bounding box's density (float32, zero outside the mask; built on first use)."""
        return self._dense[1]


#: Rotates ``(template, quaternion)`` pairs into voxel lists (:func:`rotate_items`, bound to
#: a device): what the layout's placement and rendering call.
Rotate = Callable[[list[tuple[Template, np.ndarray]]], list[VoxelBox]]


def voxel_box(box: RotatedBox) -> VoxelBox:
    """The :class:`VoxelBox` of a dense rotated box (voxels sorted by ``(y, z, x)``)."""
    yzx = np.argwhere(box.mask.transpose(1, 0, 2))
    values = box.density[yzx[:, 1], yzx[:, 0], yzx[:, 2]].astype(np.float32)
    zyx = yzx[:, [1, 0, 2]] + np.asarray(box.offset, dtype=np.int64)
    small = np.abs(zyx).max(initial=0) < 2**15 - 1
    return VoxelBox(zyx.astype(np.int16 if small else np.int32), values)  # int8 if it fits


# ----------------------------------------------------------------- host: SciPy and the kernel


def _boxes(template: Template, matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per rotation (``(N, 3, 3)`` on (x, y, z)): the ``(z, y, x)`` matrix, box start and end.

    :func:`~faket_dask.stages.templates.rotate_template`'s box (its contour's voxels rotated,
    two voxels around), for a batch at once.
    """
    m = np.ascontiguousarray(np.transpose(matrices, (0, 2, 1))[:, ::-1, ::-1])
    lo = np.empty((len(m), 3), dtype=np.int64)
    hi = np.empty((len(m), 3), dtype=np.int64)
    sure = np.empty(len(m), dtype=np.bool_)
    _surface_bounds(np.ascontiguousarray(template.surface), m, (lo, hi), sure)
    again = np.flatnonzero(~sure)
    if len(again):  # an extent within rounding of an integer: NumPy's own product decides
        moved = np.matmul(template.surface, m[again])  # (n, S, 3): surface @ m per rotation
        lo[again] = np.floor(moved.min(axis=1)).astype(np.int64) - 2
        hi[again] = np.ceil(moved.max(axis=1)).astype(np.int64) + 2
    return m, lo, hi


@kernel
def _surface_bounds(
    surface: np.ndarray, m: np.ndarray, out: tuple[np.ndarray, np.ndarray], sure: np.ndarray
) -> None:
    """Box of each rotation: ``floor(min) - 2`` and ``ceil(max) + 2`` of ``surface @ m[j]``.

    The box start enters every coordinate's arithmetic (SciPy's shift is ``c + m lo``), so it
    must be NumPy's to the voxel: ``sure[j]`` is False where an extent lies within 1e-9 of an
    integer, where this sum and NumPy's (BLAS) could round to different sides.
    """
    lo, hi = out
    for j in range(m.shape[0]):
        sure[j] = True
        for a in range(3):
            low, high = np.inf, -np.inf
            for k in range(surface.shape[0]):
                v = surface[k, 0] * m[j, 0, a] + surface[k, 1] * m[j, 1, a]
                v += surface[k, 2] * m[j, 2, a]
                low, high = min(low, v), max(high, v)
            lo[j, a] = int(np.floor(low)) - 2
            hi[j, a] = int(np.ceil(high)) + 2
            for e in (low, high):
                if abs(e - np.round(e)) < 1e-9:
                    sure[j] = False


def _voxels(template: Template, m: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> VoxelBox:
    """SciPy's interpolation of one rotation on its box, kept above the level, as voxels.

    The reference the compiled kernel (:func:`_interpolate_boxes`) reproduces byte for byte.
    """
    out = rotated_box_density(template, m, lo, hi)
    y, z, x = np.nonzero(out.transpose(1, 0, 2) > template.level)  # sorted by (y, z, x)
    if not len(y):  # a degenerate, sub-voxel template: one voxel at the position
        return VoxelBox(np.zeros((1, 3), np.int8), np.full(1, np.float32(template.level)))
    zyx = (np.stack([z, y, x], axis=1) + lo).astype(_index_type(lo, hi))
    return VoxelBox(zyx, out[z, y, x])


def _index_type(lo: np.ndarray, hi: np.ndarray) -> type[np.signedinteger[Any]]:
    """The smallest integer type that holds every offset of the box ``lo..hi``."""
    reach = int(max(np.abs(lo).max(), np.abs(hi).max()))
    return np.int8 if reach < 127 else np.int16 if reach < 2**15 - 1 else np.int32


def rotate_voxels(template: Template, matrix: np.ndarray) -> VoxelBox:
    """:func:`~faket_dask.stages.templates.rotate_template` as a :class:`VoxelBox`, directly.

    The same SciPy call on the same box, so the same voxels and float32 values, without the
    dense crop in between (``voxel_box(rotate_template(t, m))``, byte for byte; tested).
    """
    m, lo, hi = _boxes(template, np.asarray(matrix, dtype=np.float64)[None])
    return _voxels(template, m[0], lo[0], hi[0])


@kernel
def _trilinear(
    flat: np.ndarray, base: int, steps: tuple[int, int], f: tuple[float, float, float]
) -> float:
    """SciPy's order-1 value in its float64 operations: the eight corners from ``base``.

    ``f`` holds the fractional parts; ``steps`` the flat steps ``(z, y)`` to the upper corners
    (x: 1) of the template padded with zeros on its high faces: where the coordinate is the
    last index SciPy reads another voxel with a weight of exactly 0, so a zero reads the same
    sum (the sum starts at +0 and never becomes -0). The last axis fastest, ``v * w_z * w_y *
    w_x`` added in turn, with ``w_0 = 1 - f`` and ``w_1 = 1 - w_0``.
    """
    dz, dy = steps
    a0, b0, c0 = 1.0 - f[0], 1.0 - f[1], 1.0 - f[2]
    a1, b1, c1 = 1.0 - a0, 1.0 - b0, 1.0 - c0
    t = 0.0
    t += flat[base] * a0 * b0 * c0
    t += flat[base + 1] * a0 * b0 * c1
    t += flat[base + dy] * a0 * b1 * c0
    t += flat[base + dy + 1] * a0 * b1 * c1
    t += flat[base + dz] * a1 * b0 * c0
    t += flat[base + dz + 1] * a1 * b0 * c1
    t += flat[base + dz + dy] * a1 * b1 * c0
    t += flat[base + dz + dy + 1] * a1 * b1 * c1
    return float(t)


@kernel
def _row_span(
    row: tuple[float, float, float],
    step: tuple[float, float, float],
    box: np.ndarray,
    iz: int,
    iy: int,
    reach: np.ndarray,
) -> tuple[int, int]:
    """The ``ix`` range of a box row whose coordinates can fall in a live cell.

    The row's template coordinate is ``row + ix * step`` (per template axis). ``box`` is the
    box's row of ``boxes`` (start, shape). ``reach`` ``(4, 2)``: rows 0-2, per
    template axis, the lowest lower corner of a live cell and the highest plus one (every
    coordinate in a live cell lies between them); row 3, column 0: the distance from the
    reference point beyond which no coordinate is live (a rotation keeps distances:
    ``|p - c| = |o|`` for the output offset ``o``). The range is widened by a voxel on each
    side, so that this arithmetic's rounding (not SciPy's order) cannot lose a live voxel.
    """
    oz, oy = iz + box[0], iy + box[1]
    r2 = reach[3, 0] ** 2 - oz * oz - oy * oy
    if r2 < 0.0:
        return 0, 0
    half = np.sqrt(r2)
    low, high = max(0.0, -half - box[2]), min(box[5] - 1.0, half - box[2])
    for k in range(3):
        c0, dk = row[k], step[k]
        if abs(dk) < 1e-12:  # the row keeps this coordinate (to rounding)
            if c0 < reach[k, 0] - 1e-6 or c0 > reach[k, 1] + 1e-6:
                return 0, 0
            continue
        a, b = (reach[k, 0] - c0) / dk, (reach[k, 1] - c0) / dk
        low, high = max(low, min(a, b)), min(high, max(a, b))
    if high < low - 1.0:
        return 0, 0
    return max(0, int(np.floor(low)) - 1), min(box[5], int(np.ceil(high)) + 2)


@kernel
def _interpolate_box(
    tpl: _Flat,
    m: np.ndarray,
    shift: np.ndarray,
    box: np.ndarray,
    level: np.float32,
    out: tuple[np.ndarray, np.ndarray],
    n: int,
    bounds: np.ndarray,
) -> int:
    """One rotation (:func:`_interpolate_boxes`): its voxels written from row ``n``; the end.

    SciPy's coordinate ``((shift_k + o_z m_k0) + o_y m_k1) + o_x m_k2`` is summed in that
    order; the first two terms are a row's constant, so they are added once per row.
    """
    flat, alive, reach, dims = tpl
    d, h, w = dims[0], dims[1], dims[2]
    hp, wp = h + 1, w + 1  # the padded arrays' rows
    zyx, values = out
    zero_kept = np.float32(0.0) > level
    mz, my, mx = m[0, 2], m[1, 2], m[2, 2]  # a step along the row, per template axis
    bounds[:3], bounds[3:] = 2**62, -(2**62)
    for iy in range(box[4]):
        for iz in range(box[3]):
            rz = shift[0] + iz * m[0, 0]
            rz += iy * m[0, 1]
            ry = shift[1] + iz * m[1, 0]
            ry += iy * m[1, 1]
            rx = shift[2] + iz * m[2, 0]
            rx += iy * m[2, 1]
            first_x, end_x = 0, box[5]
            if not zero_kept:  # skip the voxels that cannot reach a live cell (exact 0)
                first_x, end_x = _row_span((rz, ry, rx), (mz, my, mx), box, iz, iy, reach)
            kept = n
            ix = first_x
            while ix < end_x:
                cz, cy, cx = rz + ix * mz, ry + ix * my, rx + ix * mx
                ix += 1
                t = 0.0  # outside [0, n - 1] or in a dead cell: exactly 0
                if 0.0 <= cz <= d - 1 and 0.0 <= cy <= h - 1 and 0.0 <= cx <= w - 1:
                    z0, y0, x0 = int(cz), int(cy), int(cx)  # >= 0: floor
                    base = (z0 * hp + y0) * wp + x0
                    if alive[base]:
                        t = _trilinear(flat, base, (hp * wp, wp), (cz - z0, cy - y0, cx - x0))
                    elif not zero_kept:
                        continue
                elif not zero_kept:
                    continue
                if np.float32(t) > level:  # float32 against float32, as NumPy compares them
                    o = ix - 1
                    zyx[n, 0], zyx[n, 1], zyx[n, 2] = iz + box[0], iy + box[1], o + box[2]
                    values[n] = t  # rounded to the array's type (float32; float64 in tests)
                    n += 1
            if n > kept:  # the row's kept voxels: x from zyx[kept] to zyx[n - 1]
                _widen(bounds, iz + box[0], iy + box[1], zyx[kept, 2], zyx[n - 1, 2])
    return n


@kernel
def _widen(bounds: np.ndarray, z: int, y: int, x_first: int, x_last: int) -> None:
    """Widen ``bounds`` (lowest ``(z, y, x)``, then highest) to a row's kept voxels."""
    bounds[0], bounds[3] = min(bounds[0], z), max(bounds[3], z)
    bounds[1], bounds[4] = min(bounds[1], y), max(bounds[4], y)
    bounds[2], bounds[5] = min(bounds[2], x_first), max(bounds[5], x_last)


@kernel
def _interpolate_boxes(
    tpl: _Flat,
    mats: np.ndarray,
    shifts: np.ndarray,
    boxes: np.ndarray,
    level: np.float32,
    out: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """Rotations of one template, each on its box, kept above ``level``, sorted by (y, z, x).

    SciPy's ``affine_transform`` (order 1, ``mode="constant"``, float32 output) in the same
    float64 operations and order: the coordinate ``shift_k + sum_l o_l m_kl``; outside
    ``[0, n - 1]`` on any axis the value is 0; else :func:`_trilinear`. A cell whose corners
    are all zero (``live`` false) gives exactly 0, so it is not interpolated, and a row's
    voxels that cannot reach a live cell are not visited (unless 0 is above the level).

    Parameters
    ----------
    tpl
        The template, flat and padded with a zero past each high face (:func:`_prepared`):
        its ``((d + 1) (h + 1) (w + 1),)`` float64 density (its float32 values, converted
        once) and bool live cells (the cell at this lower corner has a non-zero corner),
        ``(4, 2)`` float64 reach (where live cells lie, :func:`_row_span`) and ``(3,)``
        int64 unpadded shape ``(d, h, w)``.
    mats, shifts
        ``(N, 3, 3)`` output offset -> template offset and ``(N, 3)`` template coordinate of
        each box's first voxel.
    boxes
        ``(N, 6)`` int64: box start ``(z, y, x)`` and box shape ``(z, y, x)``.
    level
        Contour level as float32: a voxel is kept when its float32 value is above it (NumPy
        compares a float32 array with a Python float in float32).
    out
        Filled: ``(total, 3)`` int32 offsets and ``(total,)`` float32 values (float64: the
        unrounded values, for tests), box after box
        (``total``: at least the boxes' voxels); ``(N,)`` voxels kept per box; ``(N, 6)``
        int64 the kept voxels' lowest and highest offsets ``(z, y, x)``.
    """
    zyx, values, counts, bounds = out
    n = 0
    for j in range(mats.shape[0]):
        end = _interpolate_box(
            tpl, mats[j], shifts[j], boxes[j], level, (zyx, values), n, bounds[j]
        )
        counts[j] = end - n
        n = end


def _cells_touching(mask: np.ndarray) -> np.ndarray:
    """``(d, h, w)`` bool: some corner ``u + e`` (e in {0, 1}^3) of cell ``u`` is in ``mask``."""
    d, h, w = mask.shape
    out = np.zeros_like(mask)
    for dz, dy, dx in _CORNERS:
        out[: d - dz, : h - dy, : w - dx] |= mask[dz:, dy:, dx:]
    return np.asarray(out)


def _live_cells(density: np.ndarray) -> np.ndarray:
    """``(d, h, w)`` bool: some corner of the cell at this lower corner is non-zero."""
    return _cells_touching(density != 0)


def _kernel_boxes(
    template: Template, m: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> list[VoxelBox]:
    """Rotations ``m`` ``(N, 3, 3)`` of one template on boxes ``lo..hi`` by the kernel.

    The same voxels and float32 values as :func:`_voxels` (SciPy) per rotation (tested).
    """
    n = len(m)
    shape = hi - lo + 1
    boxes = np.ascontiguousarray(np.concatenate([lo, shape], axis=1), dtype=np.int64)
    # the shift exactly as rotated_box_density computes it, rotation by rotation
    centre = template.centre  # a property: computed on each read
    shifts = np.stack([centre + m[j] @ lo[j] for j in range(n)])
    counts, bounds = np.zeros(n, dtype=np.int64), np.zeros((n, 6), dtype=np.int64)
    level = np.float32(template.level)
    itype = _index_type(lo, hi)
    size = int(np.prod(shape, axis=1).sum())  # only the kept voxels' pages are touched
    zyx, values = np.empty((size, 3), dtype=np.int32), np.empty(size, dtype=np.float32)
    _interpolate_boxes(_prepared(template), m, shifts, boxes, level, (zyx, values, counts, bounds))
    ends = np.cumsum(counts)
    out = []
    for j in range(n):
        if counts[j] == 0:  # a degenerate, sub-voxel template: one voxel at the position
            out.append(VoxelBox(np.zeros((1, 3), np.int8), np.full(1, np.float32(template.level))))
            continue
        a, b = int(ends[j] - counts[j]), int(ends[j])
        # copies, not views of the call's buffer: the box cache counts each box's own bytes
        box_zyx, box_values = zyx[a:b].astype(itype), values[a:b].copy()
        out.append(VoxelBox.bounded(box_zyx, box_values, bounds[j, :3], bounds[j, 3:]))
    return out


_PREPARED: weakref.WeakKeyDictionary[Template, _Flat] = weakref.WeakKeyDictionary()


def _prepared(template: Template) -> _Flat:
    """The template for the kernel, cached: flat float64 density, live cells, reach, shape.

    The density and the live cells carry a zero past each high face (:func:`_trilinear`);
    ``reach`` is :func:`_row_span`'s.
    """
    got = _PREPARED.get(template)
    if got is None:
        density = np.ascontiguousarray(template.density, dtype=np.float32)
        live = _live_cells(density)
        reach = np.zeros((4, 2))
        cells = np.argwhere(live)
        if len(cells):  # a cell's points lie within sqrt(3) of its lower corner
            reach[:3, 0], reach[:3, 1] = cells.min(axis=0), cells.max(axis=0) + 1.0
            far = np.sqrt(((cells - template.centre) ** 2).sum(axis=1).max())
            reach[3, 0] = far + np.sqrt(3.0) + 1e-6
        dims = np.array(density.shape, dtype=np.int64)
        pad = ((0, 1), (0, 1), (0, 1))  # a zero past each high face: the corners of a cell
        flat = np.pad(density.astype(np.float64), pad).ravel()
        got = (flat, np.pad(live, pad).ravel(), reach, dims)
        _PREPARED[template] = got
    return got


def _rotate_host(items: list[tuple[Template, np.ndarray]]) -> list[VoxelBox]:
    """Rotate templates by quaternions with the kernel, in threads; SciPy's bytes."""
    if not items:
        return []
    mats = quaternions_to_matrices(np.stack([np.asarray(q, np.float64) for _, q in items]))
    groups: dict[int, list[int]] = {}
    for k, (tpl, _) in enumerate(items):
        groups.setdefault(id(tpl), []).append(k)
    jobs = []
    per = max(1, -(-len(items) // (4 * _threads())))  # a few chunks per thread
    for idx in groups.values():  # the boxes of one template's rotations at once
        tpl = items[idx[0]][0]
        m, lo, hi = _boxes(tpl, mats[idx])
        for a in range(0, len(idx), per):
            jobs.append((idx[a : a + per], tpl, m[a : a + per], lo[a : a + per], hi[a : a + per]))

    def one(job: tuple[list[int], Template, np.ndarray, np.ndarray, np.ndarray]) -> list[VoxelBox]:
        return _kernel_boxes(*job[1:])

    done = map_threads(one, jobs)
    out: list[VoxelBox | None] = [None] * len(items)
    for job, boxes in zip(jobs, done, strict=True):
        for k, box in zip(job[0], boxes, strict=True):
            out[k] = box
    return [b for b in out if b is not None]


# --------------------------------------------------------------------------- device: torch


@dataclass(frozen=True, eq=False)
class _Kernel:
    """A template prepared for batched rotation on one device."""

    ball: torch.Tensor  # (K, 3) float64 candidate offsets (z, y, x), sorted by (y, z, x)
    ball_int: np.ndarray  # (K, 3) the same as int16/int32 (host)
    near: torch.Tensor  # (d*h*w,) bool: the cell at this corner has a corner inside
    density: torch.Tensor  # (d*h*w,) float64
    dims: torch.Tensor  # (3,) int64 template shape
    strides: torch.Tensor  # (3,) int64
    corners: torch.Tensor  # (8,) int64 flat offsets of a cell's corners
    centre: torch.Tensor  # (3,) float64 reference voxel
    level: float


_KERNELS: weakref.WeakKeyDictionary[Template, dict[str, _Kernel]] = weakref.WeakKeyDictionary()


def _kernel(template: Template, device: torch.device) -> _Kernel:
    """The (cached) :class:`_Kernel` of a template on ``device``."""
    per = _KERNELS.setdefault(template, {})
    if str(device) in per:
        return per[str(device)]
    dens = np.asarray(template.density, dtype=np.float64)
    inside = dens > template.level
    near = _cells_touching(inside)  # near[u]: some corner of the cell at u is inside
    _, h, w = inside.shape
    r = template.radius_px + math.sqrt(3.0) + 1e-6
    n = math.ceil(r)
    ax = np.arange(-n, n + 1, dtype=np.int64)
    yy, zz, xx = np.meshgrid(ax, ax, ax, indexing="ij")  # (y, z, x) order: sorted by y, z, x
    zyx = np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1)
    zyx = zyx[(zyx * zyx).sum(axis=1) <= r * r]
    strides = np.array([h * w, w, 1], dtype=np.int64)
    k = _Kernel(
        ball=torch.as_tensor(zyx, dtype=torch.float64, device=device),
        ball_int=zyx.astype(np.int16 if n < 2**15 - 1 else np.int32),
        near=torch.as_tensor(near.ravel(), device=device),
        density=torch.as_tensor(dens.ravel(), device=device),
        dims=torch.as_tensor(np.array(inside.shape, dtype=np.int64), device=device),
        strides=torch.as_tensor(strides, device=device),
        corners=torch.as_tensor(_CORNERS @ strides, device=device),
        centre=torch.as_tensor(template.centre, dtype=torch.float64, device=device),
        level=float(template.level),
    )
    per[str(device)] = k
    return k


def _zyx_matrices(quaternions: np.ndarray) -> np.ndarray:
    """``(N, 3, 3)`` rotations acting on ``(z, y, x)`` output offsets -> template offsets.

    The matrix :func:`~faket_dask.stages.templates.rotate_template` builds from the
    ``(x, y, z)`` rotation ``R``: transposed, the axes reversed.
    """
    r = quaternions_to_matrices(quaternions)
    return np.ascontiguousarray(np.transpose(r, (0, 2, 1))[:, ::-1, ::-1])


def _interpolate(k: _Kernel, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Voxels above the level for rotations ``m`` ``(n, 3, 3)``: particle, ball index, value."""
    p = torch.einsum("nab,kb->nka", m, k.ball) + k.centre  # (n, K, 3) template coordinates
    cell = torch.floor(p)
    icell = cell.to(torch.int64)
    inside = ((icell >= 0) & (icell < k.dims)).all(dim=2)
    flat = (icell * k.strides).sum(dim=2)
    cand = inside & k.near[torch.where(inside, flat, torch.zeros_like(flat))]
    j, i = torch.nonzero(cand, as_tuple=True)
    f = p[j, i] - cell[j, i]  # (s, 3) fractions
    v = k.density[flat[j, i, None] + k.corners].view(-1, 2, 2, 2)  # corners (z, y, x)
    w = v[:, 0] + (v[:, 1] - v[:, 0]) * f[:, 0].view(-1, 1, 1)  # along z, then y, then x
    u = w[:, 0] + (w[:, 1] - w[:, 0]) * f[:, 1].view(-1, 1)
    val = u[:, 0] + (u[:, 1] - u[:, 0]) * f[:, 2]
    keep = val.to(torch.float32) > float(np.float32(k.level))  # in float32, as NumPy
    return j[keep], i[keep], val[keep]


def rotate_batch(
    template: Template, quaternions: np.ndarray, device: str | torch.device | None = None
) -> list[VoxelBox]:
    """Rotate one template by many quaternions at once, in torch on ``device``.

    Parameters
    ----------
    template
        The particle template.
    quaternions
        ``(N, 4)`` unit quaternions ``(w, x, y, z)``.
    device
        Torch device of the computation (default: CPU). The boxes come back on the host.

    Returns
    -------
    list of VoxelBox
        One per quaternion, in order. A template too small to keep any voxel gives one voxel
        at the position, at the level (as :func:`~faket_dask.stages.templates.rotate_template`).
    """
    dev = torch.device("cpu" if device is None else device)
    q = np.asarray(quaternions, dtype=np.float64).reshape(-1, 4)
    if not len(q):
        return []
    k = _kernel(template, dev)
    mats = torch.as_tensor(_zyx_matrices(q), device=dev)
    per = max(1, CHUNK_SAMPLES // len(k.ball_int))
    out: list[VoxelBox] = []
    for a in range(0, len(q), per):
        j, i, val = _interpolate(k, mats[a : a + per])
        counts = np.bincount(j.cpu().numpy(), minlength=min(per, len(q) - a))
        zyx = k.ball_int[i.cpu().numpy()]
        values = val.to(torch.float32).cpu().numpy()
        ends = np.cumsum(counts)
        for c, e in zip(counts, ends, strict=True):
            if c == 0:  # a degenerate, sub-voxel template
                one = np.zeros((1, 3), dtype=k.ball_int.dtype)
                out.append(VoxelBox(one, np.full(1, np.float32(k.level), np.float32)))
            else:
                out.append(VoxelBox(zyx[e - c : e], values[e - c : e]))
    return out


def rotate_items(
    items: list[tuple[Template, np.ndarray]],
    device: str | torch.device | None = None,
    batched: bool | None = None,
) -> list[VoxelBox]:
    """Rotate ``(template, quaternion)`` pairs, boxes in the given order.

    On the host with the kernel (``device`` None or CPU), else batched by template on ``device``
    (``batched`` forces either path; the batched one on the CPU is how it is tested).
    """
    if batched is None:
        batched = device is not None and torch.device(device).type != "cpu"
    if not batched:
        return _rotate_host(items)
    out: list[VoxelBox | None] = [None] * len(items)
    groups: dict[int, list[int]] = {}
    for n, (tpl, _) in enumerate(items):
        groups.setdefault(id(tpl), []).append(n)
    for idx in groups.values():
        qs = np.stack([np.asarray(items[n][1], dtype=np.float64).reshape(4) for n in idx])
        for n, box in zip(idx, rotate_batch(items[idx[0]][0], qs, device), strict=True):
            out[n] = box
    return [b for b in out if b is not None]
