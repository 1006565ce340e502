"""The renderer's compiled kernels: solvent rows and particle voxel lists written into a slab.

Each kernel repeats, voxel by voxel, the float32 operations of the NumPy code it replaced, in
the same order (numba without ``fastmath`` neither reassociates nor contracts ``a + b * c``
into a fused multiply-add), so the bytes are the same. They release the GIL (see
:mod:`~faket_dask.stages.sample._jit`); the solvent is split by Z ranges across threads, each
voxel computed by exactly one of them, so the bytes never depend on the thread count.
"""

from __future__ import annotations

import numpy as np

from faket_dask.stages.sample._jit import kernel

__all__ = ["fill_block", "gather_runs", "solvent_lattice", "sort_runs"]


@kernel
def solvent_lattice(rng: np.random.Generator, level: float, rel: float, out: np.ndarray) -> None:
    """One lattice plane: ``max(0, level * (1 + rel * n))`` of standard normals ``n`` (in place).

    Parameters
    ----------
    rng
        The plane's keyed generator; numba's ``standard_normal`` draws NumPy's values in
        NumPy's order (C order of ``out``), twice as fast as NumPy's own here.
    level, rel
        Solvent density and its relative standard deviation.
    out
        ``(nzc, nxc)`` float32: the float64 value rounded once, as ``astype(np.float32)``.
    """
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            v = level * (1.0 + rel * rng.standard_normal())
            out[i, j] = v if v > 0.0 else 0.0


@kernel
def _lattice_row(
    lattice: np.ndarray, jz: int, wz: float, s: int, w: np.ndarray, tmp: np.ndarray, out: np.ndarray
) -> None:
    """One lattice plane interpolated at one Z into the row ``out`` (in place).

    Parameters
    ----------
    lattice
        ``(nzc, nxc)`` float32 lattice values at ``(k s, j s)``.
    jz, wz
        The Z lattice cell ``z // s`` and its float32 weight ``w[z - jz s]``.
    s, w
        Lattice spacing (voxels) and its ``(s,)`` float32 weights ``np.float32(r / s)``.
    tmp
        ``(2, nxc)`` float32 scratch.
    out
        ``(nx,)`` float32: ``B[j] = L[jz, j] + (L[jz + 1, j] - L[jz, j]) * wz`` along Z first,
        then ``B[jx] + (B[jx + 1] - B[jx]) * w[rx]`` along X.
    """
    nx = out.shape[0]
    nxc = lattice.shape[1]
    for j in range(nxc):
        a = lattice[jz, j]
        tmp[0, j] = a + (lattice[jz + 1, j] - a) * wz
    for j in range(nxc - 1):
        tmp[1, j] = tmp[0, j + 1] - tmp[0, j]
    for r in range(min(s, nx)):
        wx = w[r]
        for j in range((nx - 1 - r) // s + 1):  # x = j s + r < nx
            out[j * s + r] = tmp[0, j] + tmp[1, j] * wx


@kernel
def _solvent_plane(
    lattices: np.ndarray,
    y0: int,
    s: int,
    w: np.ndarray,
    z: int,
    scratch: tuple[np.ndarray, np.ndarray, np.ndarray],
    out: np.ndarray,
) -> None:
    """Solvent rows ``[y0, y0 + rows)`` at one Z (in place).

    Parameters
    ----------
    lattices
        ``(P, nzc, nxc)`` float32 lattice planes ``k = y0 // s, ..., (y1 - 1) // s + 1``.
    y0
        First Y row of ``out``.
    s, w
        Lattice spacing and its ``(s,)`` float32 weights ``np.float32(r / s)``.
    z
        The volume's Z of ``out``.
    scratch
        ``(2, nxc)``, ``(nx,)`` and ``(nx,)`` float32: the rows of the planes before ``y0`` and
        at or after ``y1`` when they are not in ``out``.
    out
        ``(rows, nx)`` float32: row ``y = k s + r`` is plane ``A_k`` when ``r = 0`` (written
        there directly), else ``A_k + (A_{k+1} - A_k) * w[r]``.
    """
    tmp, first, last = scratch
    rows, nx = out.shape
    y1 = y0 + rows
    k0 = y0 // s
    jz = z // s
    wz = w[z - jz * s]
    lo = out[k0 * s - y0] if k0 * s == y0 else first
    _lattice_row(lattices[0], jz, wz, s, w, tmp, lo)
    for k in range(k0, (y1 - 1) // s + 1):
        up = out[(k + 1) * s - y0] if (k + 1) * s < y1 else last
        _lattice_row(lattices[k - k0 + 1], jz, wz, s, w, tmp, up)
        for y in range(max(y0, k * s + 1), min(y1, (k + 1) * s)):
            wr = w[y - k * s]
            row = out[y - y0]
            for x in range(nx):
                a = lo[x]
                row[x] = a + (up[x] - a) * wr
        lo = up


@kernel
def _first_row(zyx: np.ndarray, lo: int) -> int:
    """The first voxel of ``zyx`` (sorted by Y) whose Y offset is at least ``lo``."""
    a, b = 0, zyx.shape[0]
    while a < b:
        mid = (a + b) // 2
        if zyx[mid, 1] < lo:
            a = mid + 1
        else:
            b = mid
    return a


@kernel
def gather_runs(
    zyx: np.ndarray,
    values: np.ndarray,
    at: np.ndarray,
    vals: np.ndarray,
    runs: np.ndarray,
    count: np.ndarray,
) -> None:
    """Append one particle's voxels in a slab as runs along X (in place).

    Parameters
    ----------
    zyx
        ``(m, 3)`` integer ``(z, y, x)`` offsets from the position, sorted by ``(y, z, x)``
        (a :class:`~faket_dask.stages.sample.rotation.VoxelBox`); every voxel in the volume.
    values
        ``(m,)`` float32 densities.
    at
        ``(6,)`` int64: the ``(z, y, x)`` position, the particle's index ``j``, the slab's
        first volume row and its row count.
    vals
        ``(cap,)`` float32: the voxels' densities, appended at ``count[0]``.
    runs
        ``(cap, 6)`` integer records ``(z, row, x, length, first value, j)`` appended at
        ``count[1]``: ``length`` voxels from ``(z, row, x)`` along X (``row`` in the slab)
        with densities ``vals[first value:][:length]``.
    count
        ``(2,)`` int64 values and runs held so far, advanced.
    """
    pz, py, px, j, y0, rows = at[0], at[1], at[2], at[3], at[4], at[5]
    m = zyx.shape[0]
    i = _first_row(zyx, y0 - py)
    nv, nr = count[0], count[1]
    while i < m and zyx[i, 1] < y0 + rows - py:
        dz, dy, dx = zyx[i, 0], zyx[i, 1], zyx[i, 2]
        b = i + 1  # the run: the same (z, y), X one further each voxel
        while b < m and zyx[b, 1] == dy and zyx[b, 0] == dz and zyx[b, 2] == dx + (b - i):
            b += 1
        runs[nr, 0], runs[nr, 1], runs[nr, 2] = pz + dz, py + dy - y0, px + dx
        runs[nr, 3], runs[nr, 4], runs[nr, 5] = b - i, nv, j
        nr += 1
        for k in range(i, b):
            vals[nv] = values[k]
            nv += 1
        i = b
    count[0], count[1] = nv, nr


@kernel
def sort_runs(
    runs: np.ndarray, vals: np.ndarray, cells: tuple[int, int, int]
) -> tuple[np.ndarray, ...]:
    """Runs and their values sorted by cell, stably (a counting sort), and where each starts.

    A cell is a band of ``band`` rows of one Z: cell ``z * bands + row // band``.

    Parameters
    ----------
    runs, vals
        :func:`gather_runs`'s ``(n, 6)`` runs and the values they point into.
    cells
        The volume's Z size, the bands in a Z and the rows of a band.

    Returns
    -------
    sorted_runs
        ``(n, 6)`` the same records, by cell, in their order within a cell, pointing into
        ``sorted_vals``.
    starts
        ``(cells + 1,)`` int64: the runs of cell ``c`` are ``sorted_runs[starts[c]:starts[c +
        1]]``.
    sorted_vals
        The values in the order of the runs (read in sequence while painting).
    """
    nz, bands, band = cells
    m = nz * bands
    starts = np.zeros(m + 1, dtype=np.int64)
    first = np.zeros(m + 1, dtype=np.int64)  # where each cell's values start
    for r in range(runs.shape[0]):
        c = runs[r, 0] * bands + runs[r, 1] // band
        starts[c + 1] += 1
        first[c + 1] += runs[r, 3]
    for c in range(m):
        starts[c + 1] += starts[c]
        first[c + 1] += first[c]
    at, v = starts[:-1].copy(), first[:-1]
    out = np.empty_like(runs)
    out_vals = np.empty(first[m], dtype=vals.dtype)
    for r in range(runs.shape[0]):
        c, n, src = runs[r, 0] * bands + runs[r, 1] // band, runs[r, 3], runs[r, 4]
        k, dst = at[c], v[c]
        out[k] = runs[r]
        out[k, 4] = dst
        for i in range(n):
            out_vals[dst + i] = vals[src + i]
        at[c], v[c] = k + 1, dst + n
    return out, starts, out_vals


@kernel
def _paint_runs(
    z: int,
    c: int,
    sorted_runs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    density: np.ndarray,
    classes: np.ndarray,
    instances: np.ndarray,
) -> None:
    """Write the runs of cell ``c`` of Z ``z`` (in place); ``sorted_runs``: :func:`fill_block`."""
    runs, starts, vals, labels = sorted_runs
    dz, cz, iz = density[z], classes[z], instances[z]
    for r in range(starts[c], starts[c + 1]):
        y, x, n, v, j = runs[r, 1], runs[r, 2], runs[r, 3], runs[r, 4], runs[r, 5]
        dz[y, x : x + n] = vals[v : v + n]
        cz[y, x : x + n] = labels[j, 0]
        iz[y, x : x + n] = labels[j, 1]


@kernel
def fill_block(
    zs: tuple[int, int, bool, int],
    solvent: tuple[np.ndarray, int, np.ndarray, float],
    y0: int,
    sorted_runs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    density: np.ndarray,
    classes: np.ndarray,
    instances: np.ndarray,
) -> None:
    """Z rows ``[z0, z1)`` of a slab: the solvent, then the particles' runs over it (in place).

    One band of rows of one Z at a time, so the runs are written while its rows are in cache
    (the masks too: zeroing them here first makes their lines hot).

    Parameters
    ----------
    zs
        ``(z0, z1, clear, band)``: with ``clear`` the masks are zeroed first; ``band`` rows
        at a time (:func:`sort_runs`'s cells).
    solvent
        ``(lattices, s, w, level)``: :func:`_solvent_plane`'s lattice planes, spacing and
        weights; with no planes (``lattices`` of length 0) every voxel gets ``level``
        (float32); with ``s`` 0 the density is not written (runs only).
    y0
        The slab's first volume row.
    sorted_runs
        ``(runs, starts, vals, labels)``: :func:`sort_runs`'s runs, starts and values, and
        ``(particles, 2)`` int64 class and instance id by index ``j``.
    density, classes, instances
        ``(Z, rows, X)`` slab arrays holding volume rows ``[y0, y0 + rows)``.
    """
    lattices, s, w, level = solvent
    nx = density.shape[2]
    scratch = (
        np.empty((2, lattices.shape[2]), dtype=np.float32),
        np.empty(nx, dtype=np.float32),
        np.empty(nx, dtype=np.float32),
    )
    fill = np.float32(level)
    rows, band = density.shape[1], zs[3]
    bands = (rows + band - 1) // band
    for z in range(zs[0], zs[1]):
        for b in range(bands):
            ya, yb = b * band, min(rows, (b + 1) * band)
            if s > 0 and lattices.shape[0] > 0:  # its planes from (y0 + ya) // s
                k = (y0 + ya) // s - y0 // s
                _solvent_plane(lattices[k:], y0 + ya, s, w, z, scratch, density[z, ya:yb])
            elif s > 0:
                density[z, ya:yb] = fill
            if zs[2]:
                classes[z, ya:yb] = 0
                instances[z, ya:yb] = 0
            _paint_runs(z, z * bands + b, sorted_runs, density, classes, instances)
