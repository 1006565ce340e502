"""Rendering a layout's rows into a slab: solvent, particles' voxel lists, membranes and beads.

The solvent and the particles are written by compiled kernels
(:mod:`~faket_dask.stages.sample.render_kernels`) in one pass per Z plane of the slab: the
solvent's rows, the masks cleared, then the particles' voxels in that plane, while the plane is
in cache. The voxels are gathered first from each particle's
:class:`~faket_dask.stages.sample.rotation.VoxelBox` (voxels sorted by Y row) as runs along X,
sorted by Z; the solvent's lattice planes are drawn in threads meanwhile. Particles never
overlap, so the order of the writes does not matter; membranes and beads are painted after
them. A slab's memory is reused once its arrays are dropped (:class:`SlabMemory`).
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from faket_dask.stages.sample._pool import map_threads
from faket_dask.stages.sample._pool import threads as _threads
from faket_dask.stages.sample.objects import _BoxCache, _Object, _Particle
from faket_dask.stages.sample.render_kernels import (
    fill_block,
    gather_runs,
    solvent_lattice,
    sort_runs,
)
from faket_dask.stages.sample.rotation import Rotate, VoxelBox
from faket_dask.stages.sample.spec import keyed_rng

if TYPE_CHECKING:
    from faket_dask.stages.sample.layout import SampleLayout


_T = TypeVar("_T")

__all__ = ["Renderer", "scatter_particles", "solvent_rows"]


def scatter_particles(
    slab: tuple[np.ndarray, np.ndarray, np.ndarray],
    y0: int,
    boxes: list[VoxelBox],
    positions: np.ndarray,
    labels: tuple[np.ndarray, np.ndarray],
) -> int:
    """Write particles into a slab (in place); the voxels written.

    Where particles overlap, the later one's voxel is kept.

    Parameters
    ----------
    slab
        ``(density, class_mask, instance_mask)`` arrays of shape ``(Z, rows, X)`` holding
        rows ``[y0, y0 + rows)`` of the volume.
    y0
        The slab's first row.
    boxes
        ``n`` rotated particles (voxels sorted by Y, inside the volume at their positions).
    positions
        ``(n, 3)`` int64 ``(z, y, x)`` positions of the particles.
    labels
        ``(n,)`` class ids and ``(n,)`` instance ids of the particles.
    """
    nz, rows, nx = slab[0].shape
    runs, written = _gather(boxes, positions, labels, (y0, rows), (nz, nx))
    _fill(slab, y0, _NO_SOLVENT, runs, clear=False)
    return written


#: Runs of particle voxels along X, sorted by Z: see :func:`render_kernels.fill_block`.
_Runs = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
#: Solvent lattice planes, spacing, weights and level: see :func:`render_kernels.fill_block`.
_Solvent = tuple[np.ndarray, int, np.ndarray, float]
_NO_SOLVENT: _Solvent = (np.zeros((0, 1, 1), np.float32), 0, np.zeros(1, np.float32), 0.0)


def _gather(
    boxes: list[VoxelBox],
    positions: np.ndarray,
    labels: tuple[np.ndarray, np.ndarray],
    rows: tuple[int, int],
    size: tuple[int, int],
) -> tuple[_Runs, int]:
    """The particles' voxels in rows ``[y0, y0 + n)`` as runs sorted by Z; the voxels in them.

    Parameters
    ----------
    boxes, positions, labels
        As :func:`scatter_particles`.
    rows
        The slab's first row ``y0`` and its row count ``n``.
    size
        The volume's Z and X sizes.
    """
    cap = sum(b.count for b in boxes)
    vals = np.empty(cap, dtype=np.float32)
    # pages never written are never resident: the capacity costs address space only
    runs = np.empty((cap, 6), dtype=np.int32 if cap < 2**31 else np.int64)
    count = np.zeros(2, dtype=np.int64)
    at = np.empty((len(boxes), 6), dtype=np.int64)  # gather_runs's position, j and rows
    at[:, :3] = np.asarray(positions, dtype=np.int64).reshape(-1, 3)
    at[:, 3] = np.arange(len(boxes))
    at[:, 4:] = rows
    for box, where in zip(boxes, at, strict=True):
        gather_runs(box.zyx, box.values, where, vals, runs, count)
    written = int(count[0])
    band = _band(rows[1], size[1])
    cells = (size[0], -(-rows[1] // band), band)
    ordered, starts, values = sort_runs(runs[: count[1]], vals, cells)
    ids = np.stack([np.asarray(labels[0]), np.asarray(labels[1])], axis=1).astype(np.int64)
    return (ordered, starts, values, ids.reshape(-1, 2)), written


def _band(rows: int, nx: int) -> int:
    """Rows written at a time in a Z plane: the three arrays' rows within half a MiB (cache)."""
    return max(1, min(rows, (1 << 19) // (9 * max(nx, 1))))


def _fill(
    slab: tuple[np.ndarray, ...], y0: int, solvent: _Solvent, runs: _Runs, clear: bool
) -> None:
    """Write the solvent (unless :data:`_NO_SOLVENT`), then the runs, in threads over Z.

    With ``clear`` the masks are zeroed first (:func:`render_kernels.fill_block`).

    Each Z belongs to exactly one block, so the bytes never depend on the thread count.
    """
    density, classes, instances = slab
    nz = density.shape[0]
    n = _threads()
    cuts = np.linspace(0, nz, min(nz, 4 * n) + 1).astype(int)  # a few blocks per thread
    band = _band(density.shape[1], density.shape[2])
    blocks = [(int(a), int(b), clear, band) for a, b in itertools.pairwise(cuts) if b > a]

    def block(zs: tuple[int, int, bool, int]) -> None:  # the kernel releases the GIL
        fill_block(zs, solvent, y0, runs, density, classes, instances)

    map_threads(block, blocks)


#: Slab memories kept for reuse: the slab being rendered and the one before it (in use).
KEEP_SLABS = 2


class SlabMemory:
    """Memory for a slab's arrays, handed out again once every array of that slab is gone.

    A fresh array's pages are faulted in and zeroed by the kernel on first write (about a
    quarter of a slab's rendering); a slab's memory is written again instead once nothing
    holds its arrays. Each array is a view of its own ``frombuffer`` array, whose base is a
    memoryview: every view of it (NumPy's, a torch tensor) keeps that array alive, so a dead
    weak reference to it means the memory is free. At most :data:`KEEP_SLABS` are kept.
    """

    def __init__(self) -> None:
        self._slabs: list[tuple[np.ndarray, list[weakref.ref[np.ndarray]]]] = []
        self._lock = threading.Lock()

    def arrays(self, shape: tuple[int, ...], dtypes: list[np.dtype]) -> list[np.ndarray]:
        """Uninitialised C-ordered arrays of ``shape``, one per dtype."""
        sizes = [math.prod(shape) * np.dtype(t).itemsize for t in dtypes]
        starts = [0, *itertools.accumulate(-(-n // 64) * 64 for n in sizes)]  # cache lines
        with self._lock:
            store = self._free(starts[-1])
            flats = [
                np.frombuffer(store.data[a : a + n], dtype=t)
                for t, a, n in zip(dtypes, starts[:-1], sizes, strict=True)
            ]
            self._slabs.append((store, [weakref.ref(f) for f in flats]))
            while len(self._slabs) > KEEP_SLABS:  # forget one: its arrays keep its memory
                free = [i for i, (_, r) in enumerate(self._slabs) if _dead(r)]
                del self._slabs[free[0] if free else 0]
        return [f.reshape(shape) for f in flats]

    def clear(self) -> None:
        """Keep nothing (the memory goes with the arrays handed out)."""
        with self._lock:
            self._slabs.clear()

    def _free(self, nbytes: int) -> np.ndarray:
        """A kept memory of at least ``nbytes`` whose arrays are gone, else a new one."""
        for i, (store, refs) in enumerate(self._slabs):
            if store.nbytes >= nbytes and _dead(refs):
                del self._slabs[i]
                return store
        return np.empty(nbytes, dtype=np.uint8)


def _dead(refs: list[weakref.ref[np.ndarray]]) -> bool:
    return all(r() is None for r in refs)


class Renderer:
    """Renders a layout's rows: the solvent, its particles, then the other objects.

    Parameters
    ----------
    cache
        The layout's rotated boxes (filled while placing).
    rotate
        Rotates templates for particles whose boxes are no longer cached.
    """

    def __init__(self, cache: _BoxCache, rotate: Rotate) -> None:
        self.cache, self.rotate = cache, rotate
        self.memory = SlabMemory()

    def rows(self, layout: SampleLayout, y0: int, y1: int) -> tuple[np.ndarray, ...]:
        """Rows ``[y0, y1)`` of ``layout``: density, class mask, instance mask, ``(Z, rows, X)``."""
        nz, ny, nx = layout.shape
        hit = np.flatnonzero((layout._ylo < y1) & (layout._yhi > y0))
        ids = layout.particles["id"].to_numpy()
        parts = [i for i in hit if isinstance(layout.objects[i], _Particle)]
        particles = [p for p in (layout.objects[i] for i in parts) if isinstance(p, _Particle)]
        pos = np.array([p.position for p in particles], dtype=np.int64).reshape(-1, 3)
        cls = np.array([p.class_id for p in particles], dtype=np.int64)
        boxes = self.boxes(particles, y1)  # before the slab's memory is taken
        # every density voxel is written by _fill, the masks zeroed there first
        dtypes = [np.dtype(np.float32), layout.class_dtype, np.dtype(np.uint32)]
        density, classes, instances = self.memory.arrays((nz, y1 - y0, nx), dtypes)
        if y1 == ny:  # the last rows: keep no memory past the rendering
            self.memory.clear()
        slab = (density, classes, instances)

        labels = (cls, ids[parts])
        gather = functools.partial(_gather, boxes, pos, labels, (y0, y1 - y0), (nz, nx))
        del boxes  # the values go into the runs: boxes the cache let go are freed with gather
        solvent, draws = _solvent_draws(layout, y0, y1)
        runs = _while(draws, gather)[0]  # gathered while the solvent's planes are drawn
        del gather
        _fill(slab, y0, solvent, runs, clear=True)
        for i in hit:
            if not isinstance(layout.objects[i], _Particle):
                _paint(slab, y0, layout.objects[i], int(ids[i]))
        return slab

    def boxes(self, parts: list[_Particle], y1: int) -> list[VoxelBox]:
        """The rotated boxes of ``parts`` (shared, cached, or rotated again).

        A cached box whose particle ends before row ``y1`` is the first to be evicted
        afterwards: slabs rendered in order no longer need it.
        """
        cached = [p.shared if p.shared is not None else self.cache.get(p.index) for p in parts]
        todo = [p for p, b in zip(parts, cached, strict=True) if b is None]
        if todo:  # let kept slab memory go: rotating must not add to it (peak RSS)
            self.memory.clear()
        again = self.rotate([(p.template, p.quaternion) for p in todo])  # no longer cached
        for p, box in zip(todo, again, strict=True):
            self.cache.put(p.index, box)  # for the next slab it meets
        for p in parts:
            if p.shared is None and p.hi[1] <= y1:
                self.cache.demote(p.index)
        new = iter(again)
        return [b if b is not None else next(new) for b in cached]


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
    solvent, draws = _solvent_draws(layout, y0, y1)
    _while(draws, lambda: None)
    out = np.empty((nz, y1 - y0, nx), dtype=np.float32)
    none = np.zeros((0, 0, 0), dtype=np.uint8)
    cells = nz * -(-(y1 - y0) // _band(y1 - y0, nx))
    runs = (np.zeros((0, 6), np.int32), np.zeros(cells + 1, np.int64), np.zeros(0, np.float32))
    empty = (*runs, np.zeros((0, 2), np.int64))
    _fill((out, none, none.astype(np.uint32)), y0, solvent, empty, clear=False)
    return out


def _solvent_draws(
    layout: SampleLayout, y0: int, y1: int
) -> tuple[_Solvent, list[Callable[[], None]]]:
    """The solvent of rows ``[y0, y1)`` for :func:`_fill`, and the draws that fill its planes.

    Planes ``k = y0 // s, ..., (y1 - 1) // s + 1`` (see :func:`solvent_rows`); none when the
    solvent is constant (``max(level, 0)``).
    """
    nz, _, nx = layout.shape
    level, rel, corr = layout.solvent
    if level <= 0 or rel <= 0:
        return (np.zeros((0, 1, 1), np.float32), 1, np.zeros(1, np.float32), max(level, 0.0)), []
    spec = layout.spec
    seed, sid = (0, 0) if spec is None else (spec.seed, spec.sample_id)
    s = max(1, round(corr / layout.pixel_spacing))
    nzc, nxc = (nz - 1) // s + 2, (nx - 1) // s + 2
    k0, k1 = y0 // s, (y1 - 1) // s + 1
    lattices = np.empty((k1 - k0 + 1, nzc, nxc), dtype=np.float32)

    def draw(k: int) -> None:  # the kernel releases the GIL
        solvent_lattice(keyed_rng(seed, sid, "solvent", k), level, rel, lattices[k - k0])

    w = np.array([np.float32(r / s) for r in range(s)], dtype=np.float32)
    return (lattices, s, w, 0.0), [functools.partial(draw, k) for k in range(k0, k1 + 1)]


def _while(draws: list[Callable[[], None]], work: Callable[[], _T]) -> _T:
    """``work()`` in this thread while ``draws`` run in threads (all of them done on return)."""
    n = _threads()
    if n == 1 or not draws:
        for d in draws:
            d()
        return work()
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(d) for d in draws]
        out = work()
        for f in futures:
            f.result()
    return out
