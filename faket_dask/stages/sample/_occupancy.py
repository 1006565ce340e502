"""Placement's compiled kernels: footprints of rotated particles, candidate tests and marks.

The occupancy grid is a flat bool array with C strides ``(sz, sy, 1)``; one cell holds
``b x b x b`` voxels, and voxel ``v`` lies in cell ``v // b`` (floor division, as NumPy's).
A candidate is a footprint (an index into ragged arrays of ``(z, y, x)`` cell offsets and
of voxel offsets, ``starts``/``counts`` each) at a position. Every kernel does what
:mod:`~faket_dask.stages.sample.placement` did with NumPy gathers (kept in
``tests/stages/test_placement_kernels.py`` as the reference), one candidate at a time, and a
test stops at its first taken cell. Indices are not bounds-checked: callers keep every
voxel of a candidate inside the volume (its cells, dilated one cell forward, inside the grid,
which carries one spare cell past the volume on every axis).
"""

from __future__ import annotations

import numpy as np

from faket_dask.stages.sample._jit import kernel

__all__ = [
    "candidates_free",
    "dilated_cells",
    "first_wins",
    "mark_cells",
    "max_r2",
]


@kernel
def max_r2(zyx: np.ndarray) -> np.int64:
    """The largest ``|v|^2`` (int64) of ``(m, 3)`` integer voxel offsets, ``m >= 1``."""
    r2 = np.int64(0)
    for i in range(zyx.shape[0]):
        z, y, x = np.int64(zyx[i, 0]), np.int64(zyx[i, 1]), np.int64(zyx[i, 2])
        r2 = max(r2, z * z + y * y + x * x)
    return r2


@kernel
def dilated_cells(zyx: np.ndarray, b: int) -> np.ndarray:
    """``(c, 3)`` int64 distinct cells ``zyx // b + s``, ``s`` in ``{0, 1}^3``, sorted (C order).

    The cells of the voxels at phase 0, dilated one cell forward on every axis: a superset of
    their cells at any phase ``r`` (``(r + v) // b <= v // b + 1`` for ``0 <= r < b``).
    """
    m = zyx.shape[0]
    vlo = np.empty(3, dtype=np.int64)
    vhi = np.empty(3, dtype=np.int64)
    for a in range(3):
        vlo[a] = zyx[0, a]
        vhi[a] = zyx[0, a]
        for i in range(m):
            vlo[a] = min(vlo[a], np.int64(zyx[i, a]))
            vhi[a] = max(vhi[a], np.int64(zyx[i, a]))
    div = np.empty((3, int((vhi - vlo).max()) + 1), dtype=np.int64)  # v // b, v - vlo[a]
    for a in range(3):
        for k in range(vhi[a] - vlo[a] + 1):
            div[a, k] = (vlo[a] + k) // b
    lo = np.array([div[0, 0], div[1, 0], div[2, 0]])
    n0 = div[0, vhi[0] - vlo[0]] - lo[0] + 2
    n1 = div[1, vhi[1] - vlo[1]] - lo[1] + 2
    n2 = div[2, vhi[2] - vlo[2]] - lo[2] + 2
    cells = np.zeros((n0 - 1, n1 - 1, n2 - 1), dtype=np.bool_)  # the undilated cells
    for i in range(m):
        c0 = div[0, np.int64(zyx[i, 0]) - vlo[0]] - lo[0]
        c1 = div[1, np.int64(zyx[i, 1]) - vlo[1]] - lo[1]
        c2 = div[2, np.int64(zyx[i, 2]) - vlo[2]] - lo[2]
        cells[c0, c1, c2] = True
    dense = np.zeros((n0, n1, n2), dtype=np.bool_)
    for c0 in range(n0 - 1):
        for c1 in range(n1 - 1):
            for c2 in range(n2 - 1):
                if cells[c0, c1, c2]:
                    for s0 in range(2):
                        for s1 in range(2):
                            for s2 in range(2):
                                dense[c0 + s0, c1 + s1, c2 + s2] = True
    out = np.empty((int(dense.sum()), 3), dtype=np.int64)
    k = 0
    for i in range(n0):
        for j in range(n1):
            for t in range(n2):
                if dense[i, j, t]:
                    out[k, 0] = i + lo[0]
                    out[k, 1] = j + lo[1]
                    out[k, 2] = t + lo[2]
                    k += 1
    return out


@kernel
def _widest(ext: np.ndarray) -> int:
    """The largest extent ``ext[f, 3 + a] - ext[f, a]`` of ``(n, 6)`` extents (at least 1)."""
    w = 1
    for f in range(ext.shape[0]):
        for a in range(3):
            w = max(w, ext[f, 3 + a] - ext[f, a])
    return w


@kernel
def _axis_cells(
    p: np.ndarray, b: int, strides: np.ndarray, ext: np.ndarray, table: np.ndarray
) -> None:
    """Fill ``table[a, v - ext[a]]`` with ``((p[a] + v) // b) * strides[a]``.

    For every offset ``ext[a] <= v < ext[3 + a]`` on axis ``a``: a voxel's cell is then three
    look-ups, without a division.
    """
    for a in range(3):
        for k in range(ext[3 + a] - ext[a]):
            table[a, k] = ((p[a] + ext[a] + k) // b) * strides[a]


@kernel
def _voxels_free(
    flat: np.ndarray, vox: np.ndarray, s: int, n: int, ext: np.ndarray, table: np.ndarray
) -> bool:
    """Whether no voxel ``vox[s:s + n]`` lies in a taken cell (``table`` of :func:`_axis_cells`)."""
    for t in range(s, s + n):
        c = (
            table[0, np.int64(vox[t, 0]) - ext[0]]
            + table[1, np.int64(vox[t, 1]) - ext[1]]
            + table[2, np.int64(vox[t, 2]) - ext[2]]
        )
        if flat[c]:
            return False
    return True


@kernel
def _offset(cells: np.ndarray, t: int, strides: np.ndarray) -> np.int64:
    """The flat offset of cell ``cells[t]`` ``(z, y, x)``, computed where it is read."""
    off: np.int64 = (
        np.int64(cells[t, 0]) * strides[0]
        + np.int64(cells[t, 1]) * strides[1]
        + np.int64(cells[t, 2]) * strides[2]
    )
    return off


@kernel
def candidates_free(
    flat: np.ndarray,
    bank: tuple[np.ndarray, np.ndarray, np.ndarray],
    voxels: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    which: np.ndarray,
    positions: np.ndarray,
    b: int,
    strides: np.ndarray,
) -> np.ndarray:
    """Whether candidate ``j`` (footprint ``which[j]`` at ``positions[j]``) is free.

    Parameters
    ----------
    flat
        The grid's cells (bool, flat).
    bank
        ``(cells, starts, counts)``: footprint ``f``'s test cells are the ``(z, y, x)``
        offsets ``cells[starts[f]:starts[f] + counts[f]]`` from its position's cell.
    voxels
        ``(vox, starts, counts, extents)``: footprint ``f``'s ``(m, 3)`` voxel offsets and
        ``(6,)`` extent (lowest offset, one past the highest) (used when ``b > 1``: a candidate
        whose test cells are not all free is tested again on the exact cells of its voxels).
    which, positions
        ``(N,)`` footprints and ``(N, 3)`` int64 voxel positions of the candidates.

    Returns
    -------
    ``(N,)`` bool.
    """
    cells, starts, counts = bank
    vox, vstarts, vcounts, vext = voxels
    table = np.empty((3, _widest(vext)), dtype=np.int64)
    out = np.empty(which.shape[0], dtype=np.bool_)
    for j in range(which.shape[0]):
        f = which[j]
        p = positions[j]
        base = (p[0] // b) * strides[0] + (p[1] // b) * strides[1] + (p[2] // b) * strides[2]
        free = True
        for t in range(starts[f], starts[f] + counts[f]):
            if flat[base + _offset(cells, t, strides)]:
                free = False
                break
        if not free and b > 1:
            _axis_cells(p, b, strides, vext[f], table)
            free = _voxels_free(flat, vox, vstarts[f], vcounts[f], vext[f], table)
        out[j] = free
    return out


@kernel
def mark_cells(
    flat: np.ndarray,
    bank: tuple[np.ndarray, np.ndarray, np.ndarray],
    voxels: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    which: np.ndarray,
    positions: np.ndarray,
    b: int,
    strides: np.ndarray,
    value: bool,
) -> None:
    """Set the cells of the voxels of footprint ``which[j]`` at ``positions[j]`` to ``value``.

    ``bank`` and ``voxels`` as for :func:`candidates_free`; with ``b == 1`` the test cells
    are the voxels' cells, with ``b > 1`` the exact cells are those of the voxels.
    """
    cells, starts, counts = bank
    vox, vstarts, vcounts, vext = voxels
    table = np.empty((3, _widest(vext)), dtype=np.int64)
    for j in range(which.shape[0]):
        f = which[j]
        p = positions[j]
        if b == 1:
            base = p[0] * strides[0] + p[1] * strides[1] + p[2] * strides[2]
            for t in range(starts[f], starts[f] + counts[f]):
                flat[base + _offset(cells, t, strides)] = value
            continue
        _axis_cells(p, b, strides, vext[f], table)
        e = vext[f]
        for t in range(vstarts[f], vstarts[f] + vcounts[f]):
            c = (
                table[0, np.int64(vox[t, 0]) - e[0]]
                + table[1, np.int64(vox[t, 1]) - e[1]]
                + table[2, np.int64(vox[t, 2]) - e[2]]
            )
            flat[c] = value


@kernel
def first_wins(pairs: np.ndarray, keep: np.ndarray) -> None:
    """For each ``(i, j)`` of ``pairs`` in order: ``j`` loses when ``i`` is still kept."""
    for k in range(pairs.shape[0]):
        if keep[pairs[k, 0]]:
            keep[pairs[k, 1]] = False
