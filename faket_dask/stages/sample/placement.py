"""Batched, vectorised placement of particles against an occupancy grid.

Every round gives each pending particle (the first unplaced ones of the sequence, in order,
at most ``WINDOW``) one or more candidate positions drawn at once from the sample's stream
(more per particle when few candidates were free in the last round); all candidates are
tested together against the occupancy grid (a compiled kernel,
:mod:`~faket_dask.stages.sample._occupancy`, that stops at a candidate's first taken cell) and
each particle keeps its first free one. The kept ones are then tested against each other by
bounding spheres (a k-d tree of their positions), an earlier particle winning over a later
one; a loser tries again in the next round.

A particle still unplaced after ``attempts`` candidates takes back the particles placed
ahead of it and, on small grids, searches every position exhaustively (an FFT correlation
of the grid with its cells; one free position drawn uniformly). If none is free
it is exhausted: the placed prefix of the sequence ends before it. Each grid cell belongs to
one object, so taking a particle back (unmarking its cells) is exact.

Grid cells: with one cell per voxel (``b == 1``) a particle's cells are its mask voxels. With
``b x b x b`` voxels per cell, the cells of a voxel ``p + o`` are ``P + floor((r + o) / b)``
with ``p = b P + r``: a candidate is first tested against its cells at phase 0 dilated by one
cell forward on every axis (a superset for any phase), and only when one of those is taken
against the exact cells of its voxels; it marks the exact cells. The grid carries one spare
cell past the volume on every axis.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import correlate
from scipy.spatial import cKDTree

from faket_dask.stages.sample import _occupancy, _shells, objects
from faket_dask.stages.sample._pool import map_threads, threads
from faket_dask.stages.sample.rotation import VoxelBox

__all__ = [
    "WINDOW",
    "Footprint",
    "OccupancyGrid",
    "footprint",
    "place_sequence",
]

#: Unplaced particles considered per round (in sequence order).
WINDOW = 2048
#: Candidate cells tested per round (more candidates per particle when few are pending).
ROUND_CELLS = 1 << 23
#: Largest grid (cells) searched exhaustively for a particle whose random tries all failed.
SEARCH_CELLS = 1 << 24
#: Largest number of candidates per particle and round.
MAX_CANDIDATES = 64


def _flat(cells: np.ndarray, strides: np.ndarray) -> np.ndarray:
    """Flat indices (int64) of ``(n, 3)`` cells (NumPy's integer matmul has no fast path)."""
    out: np.ndarray = cells[:, 0] * strides[0] + cells[:, 1] * strides[1] + cells[:, 2] * strides[2]
    return out


class OccupancyGrid:
    """Voxels (or ``b^3`` blocks of voxels) already taken, with one spare cell per high face.

    Parameters
    ----------
    shape
        ``(Z, Y, X)`` of the volume.
    budget
        Largest number of cells (one byte each); ``b`` grows until the grid fits. Default:
        :data:`~faket_dask.stages.sample.objects.OCCUPANCY_GRID_BYTES`.
    """

    def __init__(self, shape: tuple[int, int, int], budget: int | None = None) -> None:
        budget = objects.OCCUPANCY_GRID_BYTES if budget is None else budget
        self.shape = np.array(shape, dtype=np.int64)
        b = 1
        while int(np.prod(-(-self.shape // b))) > budget:
            b += 1
        self.b = b
        cells = -(-self.shape // b) + 1
        self.grid = np.zeros(tuple(int(v) for v in cells), dtype=bool)
        self.strides = np.array([cells[1] * cells[2], cells[2], 1], dtype=np.int64)
        self.flat = self.grid.reshape(-1)

    def _coarse(self, lo: np.ndarray, mask: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
        """The grid slices and cell mask of a voxel mask placed at ``lo`` (z, y, x)."""
        b = self.b
        if b == 1:
            sl = tuple(slice(int(a), int(a + s)) for a, s in zip(lo, mask.shape, strict=True))
            return sl, mask
        clo = lo // b
        chi = (lo + np.array(mask.shape) - 1) // b + 1
        before = lo - clo * b
        padded = np.zeros(tuple(int(v) for v in (chi - clo) * b), dtype=bool)
        padded[
            tuple(slice(int(a), int(a + s)) for a, s in zip(before, mask.shape, strict=True))
        ] = mask
        n = chi - clo
        coarse = padded.reshape(int(n[0]), b, int(n[1]), b, int(n[2]), b).any(axis=(1, 3, 5))
        sl = tuple(slice(int(a), int(c)) for a, c in zip(clo, chi, strict=True))
        return sl, np.asarray(coarse)

    def free(self, pieces: list[tuple[np.ndarray, np.ndarray]]) -> bool:
        """Whether no voxel of the ``(lo, mask)`` pieces lies in a taken cell.

        Dense masks: the reference :meth:`free_runs` is tested against (layouts use runs).
        """
        for lo, mask in pieces:
            sl, m = self._coarse(lo, mask)
            if np.any(self.grid[sl] & m):
                return False
        return True

    def mark(self, pieces: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Take the cells of the ``(lo, mask)`` pieces (dense: :meth:`mark_runs`'s reference)."""
        for lo, mask in pieces:
            sl, m = self._coarse(lo, mask)
            self.grid[sl] |= m

    def free_runs(self, runs: np.ndarray) -> bool:
        """Whether no voxel of ``(n, 4)`` runs ``(z, y, x0, x1)`` lies in a taken cell.

        A compiled walk over the runs' cells that stops at the first taken one.
        """
        return bool(_shells.runs_cells(self.flat, runs, self.b, self.strides, False))

    def mark_runs(self, runs: np.ndarray) -> None:
        """Take the cells of the voxels of ``(n, 4)`` runs ``(z, y, x0, x1)``."""
        _shells.runs_cells(self.flat, runs, self.b, self.strides, True)

    def taken(self, points: np.ndarray) -> np.ndarray:
        """Whether each voxel of ``points`` (N, 3) lies in a taken cell."""
        return np.asarray(self.flat[_flat(points // self.b, self.strides)])


@dataclass(frozen=True, eq=False)
class Footprint:
    """A rotated particle as placement sees it; ``(z, y, x)`` offsets from its position.

    Attributes
    ----------
    low_offset, high_offset
        ``(3,)`` int64 first voxel of its box and one past the last (the box's extent).
    voxels
        ``(m, 3)`` integer offsets of its mask voxels (the rotated box's own array and dtype).
    radius
        Largest distance (voxels) from the position to a mask voxel.
    b
        Voxels per cell edge of the grid it was made for.
    cells
        Coarse grids: ``(c, 3)`` int64 cell offsets from its position's cell that hold it at
        any phase (None when ``b == 1``: its voxels).
    """

    low_offset: np.ndarray
    high_offset: np.ndarray
    voxels: np.ndarray
    radius: float
    b: int = 1
    cells: np.ndarray | None = field(default=None, repr=False)

    @property
    def count(self) -> int:
        """Mask voxels."""
        return len(self.voxels)

    @property
    def test_cells(self) -> np.ndarray:
        """``(c, 3)`` int64 cell offsets from its position's cell that hold it at any phase."""
        if self.cells is None:
            return np.asarray(self.voxels, dtype=np.int64)
        return self.cells


def footprint(box: VoxelBox, occ: OccupancyGrid) -> Footprint:
    """The :class:`Footprint` of a rotated particle on an occupancy grid (compiled kernels)."""
    vox = box.zyx
    if not len(vox):
        raise ValueError("a rotated particle has no voxels")
    # coarse grids: phase 0 cells, dilated one cell forward on every axis
    cells = None if occ.b == 1 else _occupancy.dilated_cells(vox, occ.b)
    radius = float(np.sqrt(float(_occupancy.max_r2(vox))))
    lo = np.asarray(box.offset, dtype=np.int64)  # the rotation's bounds (searched if unknown)
    high = lo + np.array(box.shape, dtype=np.int64)
    return Footprint(lo, high, vox, radius, occ.b, cells)


def _ragged_starts(counts: np.ndarray) -> np.ndarray:
    """Where each of ``counts`` consecutive runs starts (int64)."""
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


class _Bank:
    """A sequence's footprints as the kernels' ragged arrays (each distinct footprint once).

    Attributes
    ----------
    ref
        ``(n,)`` the distinct footprint of each particle of the sequence.
    low, high
        ``(n, 3)`` lowest and highest position of each particle that keeps it in the volume.
    radii
        ``(n,)`` bounding sphere radii.
    voxels
        ``(vox, starts, counts, extents)``: the distinct footprints' mask voxels,
        concatenated, and their ``(low_offset, high_offset)`` extents ``(d, 6)``.
    cells
        ``(cells, starts, counts)``: their test cells, ``(z, y, x)`` offsets from a
        position's cell (the voxels themselves on a grid of one cell per voxel).
    """

    def __init__(self, occ: OccupancyGrid, fps: list[Footprint]) -> None:
        index: dict[int, int] = {}
        self.ref = np.array([index.setdefault(id(f), len(index)) for f in fps], dtype=np.int64)
        distinct = list({id(f): f for f in fps}.values())
        lows = np.stack([f.low_offset for f in distinct]).astype(np.int64)
        highs = np.stack([f.high_offset for f in distinct]).astype(np.int64)
        self.low = -lows[self.ref]
        self.high = occ.shape - highs[self.ref]
        self.radii = np.array([f.radius for f in distinct])[self.ref]
        vcounts = np.array([f.count for f in distinct], dtype=np.int64)
        vox = np.concatenate([f.voxels for f in distinct])
        extents = np.ascontiguousarray(np.concatenate([lows, highs], axis=1))
        self.voxels = (vox, _ragged_starts(vcounts), vcounts, extents)
        if occ.b == 1:
            cells, counts = vox, vcounts
        else:
            cells = np.concatenate([f.test_cells for f in distinct])
            counts = np.array([len(f.test_cells) for f in distinct], dtype=np.int64)
        self.cells = (cells, _ragged_starts(counts), counts)

    def _in_grid_order(
        self, occ: OccupancyGrid, which: np.ndarray, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidates sorted by their position's cell (nearby ones share cache lines and pages).

        Returns the order, the sorted footprints and the sorted positions (int64, contiguous).
        """
        pos = np.asarray(positions, dtype=np.int64).reshape(-1, 3)
        order = np.argsort(_flat(pos // occ.b, occ.strides), kind="stable")
        refs = self.ref[np.asarray(which, dtype=np.int64)[order]]
        return order, refs, np.ascontiguousarray(pos[order])

    def free(self, occ: OccupancyGrid, which: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Whether particle ``which[j]`` at ``positions[j]`` (N, 3) has no taken cell.

        Each candidate is tested on its own (the grid does not change), so the order they are
        tested in does not matter: they are tested in grid order.
        """
        order, refs, pos = self._in_grid_order(occ, which, positions)

        def test(part: tuple[int, int]) -> np.ndarray:  # only reads the grid: in threads
            a, b = part
            return np.asarray(
                _occupancy.candidates_free(
                    occ.flat, self.cells, self.voxels, refs[a:b], pos[a:b], occ.b, occ.strides
                )
            )

        cuts = np.linspace(0, len(order), min(threads(), len(order) // 256 + 1) + 1).astype(int)
        out = np.empty(len(order), dtype=bool)
        out[order] = np.concatenate(map_threads(test, list(itertools.pairwise(cuts))))
        return out

    def mark(
        self, occ: OccupancyGrid, which: np.ndarray, positions: np.ndarray, value: bool
    ) -> None:
        """Set (or clear) the exact cells of particles ``which`` at ``positions`` (N, 3)."""
        if len(which):
            _, refs, pos = self._in_grid_order(occ, which, positions)
            _occupancy.mark_cells(
                occ.flat, self.cells, self.voxels, refs, pos, occ.b, occ.strides, value
            )


def _resolve(positions: np.ndarray, radii: np.ndarray, slack: float) -> np.ndarray:
    """Keep candidates (in order) whose bounding spheres meet no earlier kept one's."""
    keep = np.ones(len(positions), dtype=bool)
    if len(positions) < 2:
        return keep
    tree = cKDTree(positions.astype(np.float64))
    pairs = tree.query_pairs(2.0 * float(radii.max()) + slack, output_type="ndarray")
    if not len(pairs):
        return keep
    d = np.sqrt(((positions[pairs[:, 0]] - positions[pairs[:, 1]]) ** 2).sum(axis=1))
    pairs = pairs[d <= radii[pairs[:, 0]] + radii[pairs[:, 1]] + slack]
    pairs = np.sort(pairs, axis=1)
    order = np.lexsort((pairs[:, 0], pairs[:, 1]))  # by later index, then earlier
    _occupancy.first_wins(np.ascontiguousarray(pairs[order], dtype=np.int64), keep)
    return keep


def _search(occ: OccupancyGrid, rng: np.random.Generator, fp: Footprint) -> np.ndarray | None:
    """A free position of ``fp`` drawn uniformly among all of them, or None.

    The last resort after ``attempts`` random tries, on grids of at most ``SEARCH_CELLS``
    cells: an FFT correlation of the grid with the particle's test cells gives every free
    cell; one is drawn, then a position in it (on coarse grids, the conservative cells).
    """
    if occ.grid.size > SEARCH_CELLS:
        return None
    low, high = -fp.low_offset, occ.shape - fp.high_offset
    cmin = fp.test_cells.min(axis=0)
    kernel = np.zeros(tuple(int(v) for v in fp.test_cells.max(axis=0) - cmin + 1), np.float32)
    kernel[tuple((fp.test_cells - cmin).T)] = 1.0
    hits = correlate(occ.grid.astype(np.float32), kernel, mode="valid", method="fft")
    cells = np.argwhere(hits < 0.5) - cmin  # free position cells
    lo_cell, hi_cell = low // occ.b, high // occ.b
    cells = cells[((cells >= lo_cell) & (cells <= hi_cell)).all(axis=1)]
    while len(cells):
        k = int(rng.integers(len(cells)))
        first = np.maximum(cells[k] * occ.b, low)
        last = np.minimum(cells[k] * occ.b + occ.b - 1, high)
        if (first <= last).all():
            return np.asarray(rng.integers(first, last + 1))
        cells = np.delete(cells, k, axis=0)
    return None


def _candidates(
    occ: OccupancyGrid, rng: np.random.Generator, bank: _Bank, pending: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """``k`` candidate positions per pending particle ``(W, k, 3)`` and whether each is free."""
    low, high = bank.low[pending], bank.high[pending]
    if np.any(high < low):
        raise ValueError("a footprint does not fit in the volume")
    cand = rng.integers(low[:, None], high[:, None] + 1, size=(len(pending), k, 3))
    ok = bank.free(occ, np.repeat(pending, k), cand.reshape(-1, 3))
    return cand, ok.reshape(len(pending), k)


def place_sequence(
    occ: OccupancyGrid,
    rng: np.random.Generator,
    fps: list[Footprint],
    attempts: int,
) -> tuple[np.ndarray, int]:
    """Place footprints in order, in batched rounds; positions of the placed prefix.

    Parameters
    ----------
    occ
        The occupancy grid (marked in place).
    rng
        The sample's stream (every candidate position is drawn from it).
    fps
        The sequence to place.
    attempts
        Candidate positions per particle before it is exhausted.

    Returns
    -------
    positions, placed
        ``(placed, 3)`` int64 ``(z, y, x)`` positions of particles ``0 .. placed - 1``, all of
        the sequence unless particle ``placed`` was exhausted (its successors are unmarked).
    """
    n = len(fps)
    pos = np.zeros((n, 3), dtype=np.int64)
    if not n:
        return pos, 0
    done = np.zeros(n, dtype=bool)
    tries = np.zeros(n, dtype=np.int64)
    stop, first_open, wanted = n, 0, 1
    slack = 0.0 if occ.b == 1 else float(np.sqrt(3.0) * (occ.b - 1))
    bank = _Bank(occ, fps)
    cells = bank.cells[2][bank.ref]  # test cells of each particle
    while True:
        while first_open < stop and done[first_open]:
            first_open += 1
        pending = first_open + np.flatnonzero(~done[first_open:stop])[:WINDOW]
        if not len(pending):
            break
        k = int(np.clip(ROUND_CELLS // max(1, int(cells[pending].sum())), 1, wanted))
        k = max(1, int(min(k, attempts - tries[pending].max())))
        cand, ok = _candidates(occ, rng, bank, pending, k)
        found = ok.any(axis=1)
        rate = max(float(ok.mean()), 1.0 / MAX_CANDIDATES)  # free candidates: fewer, more tries
        wanted = 1 if rate > 0.9 else int(min(MAX_CANDIDATES, np.ceil(3.0 / rate)))
        first = np.argmax(ok, axis=1)
        chosen = cand[np.arange(len(pending)), first]
        radii = bank.radii[pending]
        keep = np.zeros(len(pending), dtype=bool)
        keep[found] = _resolve(chosen[found], radii[found], slack)
        tries[pending] += np.where(found, first + 1, k)  # candidates up to the kept one
        stuck = np.flatnonzero((~keep) & (tries[pending] >= attempts))
        acc = pending[keep]
        bank.mark(occ, acc, chosen[keep], True)
        pos[acc] = chosen[keep]
        done[acc] = True
        if len(stuck):
            i = int(pending[stuck[0]])
            late = np.flatnonzero(done[i + 1 :]) + i + 1  # placed ahead of it: taken back
            bank.mark(occ, late, pos[late], False)
            done[late] = False
            spot = _search(occ, rng, fps[i])
            if spot is None:
                stop = i
            else:
                bank.mark(occ, np.array([i]), spot[None], True)
                pos[i], done[i] = spot, True
    late = np.flatnonzero(done[stop:]) + stop
    bank.mark(occ, late, pos[late], False)  # placed after an exhausted particle: not kept
    return pos[:stop], stop
