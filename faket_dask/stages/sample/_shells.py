"""Membranes' and beads' voxels as X runs, tested and marked on the occupancy grid (compiled).

A vesicle (spherical shell), a planar disc or a bead is placed by testing its voxel mask
against the occupancy grid and marking it. Its mask is thin (a shell a few voxels thick) in a
large box, so instead of the dense box the kernels give the mask as runs ``(z, y, x0, x1)``:
voxels ``x0 <= x < x1`` of row ``(z, y)``, found per row by binary searches on a quantity
that is monotone along X, and test or mark only those (a test stops at its first taken cell).

Each voxel's decision is the float64 expression of the object's ``region`` (:mod:`~faket_dask
.stages.sample.objects`), the same operations in the same order (numba contracts no multiply
and add into one rounding), so the runs hold exactly the mask's voxels:

- vesicle: ``abs(sqrt((dz**2 + dy**2) + dx**2) - radius) <= half``; bead: ``(dz**2 + dy**2)
  + dx**2 <= r2``. Along a row, ``dx**2`` does not decrease away from the centre, so on each
  side of it the voxels form one interval;
- disc: ``t = (dz * nz + dy * ny) + dx * nx`` is monotone along a row, so ``abs(t) <= half``
  is one interval, searched; inside it ``rho2 = ((dz**2 + dy**2) + dx**2) - t**2 <= r2`` is
  tested voxel by voxel (rounding may make it ragged where the row grazes the rim).

``dz = z - cz`` and so on, in float64, with ``z`` the voxel's integer index; ``r2`` is the
caller's ``radius**2`` (Python's), as ``region`` has it.
"""

from __future__ import annotations

import math

import numpy as np

from faket_dask.stages.sample._jit import kernel

__all__ = ["disc_runs", "runs_cells", "sphere_runs"]


@kernel
def _sphere_in(s: float, dx: float, ball: bool, radius: float, bound: float, side: int) -> bool:
    """Whether the voxel at ``dx`` of a row at ``s = dz * dz + dy * dy`` meets a bound's test.

    ``side`` -1: the inner bound (a vesicle's ``t >= -half``; a ball has none), +1: the outer
    one (``t <= half``, or ``d2 <= r2``). ``d2`` does not decrease with ``|dx|``, so the outer
    test holds for ``|dx|`` up to some value and the inner one from some value on.
    """
    d2 = s + dx * dx
    if ball:
        return side < 0 or d2 <= bound
    t = math.sqrt(d2) - radius
    if side < 0:
        return -bound <= t
    return t <= bound


@kernel
def _first(
    s: float, cx: float, a: int, e: int, ball: bool, radius: float, bound: float, side: int
) -> int:
    """The first ``x`` in ``[a, e)`` at which :func:`_sphere_in` (``side``) flips, or ``e``.

    On ``[a, e)`` (one side of the centre) the test is monotone in ``x``; the answer is the
    first ``x`` whose value differs from the value at ``a``.
    """
    if a >= e:
        return e
    v0 = _sphere_in(s, float(a) - cx, ball, radius, bound, side)
    lo, hi = a + 1, e
    while lo < hi:
        mid = (lo + hi) // 2
        if _sphere_in(s, float(mid) - cx, ball, radius, bound, side) != v0:
            hi = mid
        else:
            lo = mid + 1
    return lo


@kernel
def _side_run(
    s: float, cx: float, a: int, e: int, ball: bool, radius: float, bound: float
) -> tuple[int, int]:
    """The mask's voxels ``[x0, x1)`` of the row within ``[a, e)``, one side of the centre.

    Each bound's test holds on an interval of ``[a, e)``; the mask is their intersection (one
    interval, maybe empty).
    """
    if a >= e:
        return a, a
    x0, x1 = a, e
    for side in (-1, 1):
        v0 = _sphere_in(s, float(a) - cx, ball, radius, bound, side)
        f = _first(s, cx, a, e, ball, radius, bound, side)
        if v0:
            x1 = min(x1, f)  # holds on [a, f)
        else:
            x0 = max(x0, f)  # holds on [f, e)
    return x0, max(x0, x1)


@kernel
def _sphere_runs(
    centre: np.ndarray,
    box: np.ndarray,
    ball: bool,
    radius: float,
    bound: float,
    runs: np.ndarray,
) -> int:
    """Write the runs of a vesicle's shell or a bead's ball into ``runs``; how many.

    Parameters
    ----------
    centre
        ``(3,)`` float64 (z, y, x).
    box
        ``(2, 3)`` int64 the object's box ``[lo, hi)`` (only its voxels are the mask's).
    ball
        A bead (``d2 <= bound``, ``bound`` its ``radius**2``) or a vesicle
        (``abs(sqrt(d2) - radius) <= bound``, ``bound`` its half thickness).
    radius, bound
        As above (``radius`` unused for a ball).
    runs
        ``(m, 4)`` int64, at least two rows per row of the box (at most two runs per row).
    """
    lo, hi = box[0], box[1]
    n = 0
    cz, cy, cx = centre[0], centre[1], centre[2]
    split = min(max(math.ceil(cx), lo[2]), hi[2])  # first x with x - cx >= 0
    for z in range(lo[0], hi[0]):
        for y in range(lo[1], hi[1]):
            dz, dy = float(z) - cz, float(y) - cy
            s = dz * dz + dy * dy
            a0, a1 = _side_run(s, cx, lo[2], split, ball, radius, bound)
            b0, b1 = _side_run(s, cx, split, hi[2], ball, radius, bound)
            if a0 < a1 and b0 < b1 and a1 == b0:  # one run across the centre
                a1, b0 = b1, b1
            for x0, x1 in ((a0, a1), (b0, b1)):
                if x0 < x1:
                    runs[n, 0], runs[n, 1], runs[n, 2], runs[n, 3] = z, y, x0, x1
                    n += 1
    return n


@kernel
def _first_t(a_row: float, cx: float, nx: float, a: int, e: int, above: bool, h: float) -> int:
    """The first ``x`` in ``[a, e)`` at which ``t`` passes ``-h`` (``above``: ``h``), or ``e``.

    ``t(x) = a_row + (x - cx) * nx`` is monotone; the answer is the first ``x`` whose test
    (``t > h`` when ``above``, else ``t >= -h``) differs from the test at ``a``.
    """
    if a >= e:
        return e
    t = a_row + (float(a) - cx) * nx
    v0 = t > h if above else t >= -h
    lo, hi = a + 1, e
    while lo < hi:
        mid = (lo + hi) // 2
        t = a_row + (float(mid) - cx) * nx
        if (t > h if above else t >= -h) != v0:
            hi = mid
        else:
            lo = mid + 1
    return lo


@kernel
def _slab(a_row: float, cx: float, nx: float, a: int, e: int, h: float) -> tuple[int, int]:
    """``[x0, x1)``: the voxels of ``[a, e)`` with ``abs(t) <= h`` (``t`` monotone: one run)."""
    x0, x1 = a, e
    for above in (False, True):
        t = a_row + (float(a) - cx) * nx
        v0 = t > h if above else t >= -h  # the bound fails (above) or holds (below) at a
        f = _first_t(a_row, cx, nx, a, e, above, h)
        if v0 != above:  # "t >= -h" (or "t <= h") holds on [a, f)
            x1 = min(x1, f)
        else:  # it holds on [f, e)
            x0 = max(x0, f)
    return x0, max(x0, x1)


@kernel
def _disc_runs(
    centre: np.ndarray,
    normal: np.ndarray,
    box: np.ndarray,
    half: float,
    r2: float,
    runs: np.ndarray,
) -> int:
    """Write the runs of a disc (``region`` of a planar membrane) into ``runs``; how many.

    ``centre``, ``normal`` ``(3,)`` float64 (z, y, x); ``box`` ``(2, 3)`` its ``[lo, hi)``;
    ``half`` its half thickness; ``r2`` its ``radius**2``. Returns -1 when ``runs`` is full.
    """
    lo, hi = box[0], box[1]
    n = 0
    cz, cy, cx = centre[0], centre[1], centre[2]
    nz, ny, nx = normal[0], normal[1], normal[2]
    for z in range(lo[0], hi[0]):
        dz = float(z) - cz
        for y in range(lo[1], hi[1]):
            dy = float(y) - cy
            a_row = dz * nz + dy * ny
            s = dz * dz + dy * dy
            x0, x1 = _slab(a_row, cx, nx, lo[2], hi[2], half)
            start = -1
            for x in range(x0, x1 + 1):
                inside = False
                if x < x1:
                    dx = float(x) - cx
                    t = a_row + dx * nx
                    inside = (s + dx * dx) - t * t <= r2
                if inside and start < 0:
                    start = x
                elif not inside and start >= 0:
                    if n == runs.shape[0]:
                        return -1
                    runs[n, 0], runs[n, 1], runs[n, 2], runs[n, 3] = z, y, start, x
                    n += 1
                    start = -1
    return n


@kernel
def runs_cells(flat: np.ndarray, runs: np.ndarray, b: int, strides: np.ndarray, mark: bool) -> bool:
    """Test (or, with ``mark``, take) the cells of the voxels of ``runs``.

    ``flat`` is the grid (bool, C order, ``strides`` in cells); a voxel ``v`` lies in cell
    ``v // b``. Returns whether no cell was taken (a test stops at the first taken one).
    """
    for i in range(runs.shape[0]):
        z, y, x0, x1 = runs[i, 0], runs[i, 1], runs[i, 2], runs[i, 3]
        base = (z // b) * strides[0] + (y // b) * strides[1]
        for c in range(x0 // b, (x1 - 1) // b + 1):
            if mark:
                flat[base + c] = True
            elif flat[base + c]:
                return False
    return True


# one kernel of each kind, none allocating: fewer and smaller to load from numba's cache the
# first time a process places a membrane (about 3 ms each, against 10-15 for one that returns
# a new array)


def _box(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(lo, np.int64), np.asarray(hi, np.int64)])


def sphere_runs(
    centre: np.ndarray, lo: np.ndarray, hi: np.ndarray, ball: bool, radius: float, bound: float
) -> np.ndarray:
    """``(n, 4)`` int64 runs ``(z, y, x0, x1)`` of a vesicle's shell or a bead's ball.

    ``centre`` ``(3,)`` float64; ``lo``, ``hi`` ``(3,)`` the object's box; a bead (``ball``)
    holds ``d2 <= bound`` (its ``radius**2``), a vesicle ``abs(sqrt(d2) - radius) <= bound``
    (its half thickness).
    """
    rows = int(np.prod(np.maximum(np.asarray(hi) - np.asarray(lo), 0)[:2]))
    runs = np.empty((2 * rows, 4), dtype=np.int64)
    n = _sphere_runs(np.asarray(centre, np.float64), _box(lo, hi), ball, radius, bound, runs)
    return runs[:n]


def disc_runs(
    centre: np.ndarray, normal: np.ndarray, lo: np.ndarray, hi: np.ndarray, half: float, r2: float
) -> np.ndarray:
    """``(n, 4)`` int64 runs ``(z, y, x0, x1)`` of a disc of half thickness ``half``.

    ``centre``, ``normal`` ``(3,)`` float64; ``lo``, ``hi`` its box; ``r2`` its ``radius**2``.
    """
    rows = int(np.prod(np.maximum(np.asarray(hi) - np.asarray(lo), 0)[:2]))
    c, n = np.asarray(centre, np.float64), np.asarray(normal, np.float64)
    runs = np.empty((rows + 64, 4), dtype=np.int64)  # one run a row, unless rounding splits one
    while (k := _disc_runs(c, n, _box(lo, hi), half, r2, runs)) < 0:
        runs = np.empty((2 * len(runs), 4), dtype=np.int64)
    return runs[:k]
