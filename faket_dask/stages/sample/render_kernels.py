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

__all__ = ["scatter_box", "solvent_block", "solvent_lattice"]


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
def _lattice_plane(
    lattice: np.ndarray,
    s: int,
    w: np.ndarray,
    z0: int,
    tmp: np.ndarray,
    out: np.ndarray,
    row: int,
) -> None:
    """One solvent lattice plane interpolated into ``out[:, row]`` (Z from ``z0``, in place).

    Parameters
    ----------
    lattice
        ``(nzc, nxc)`` float32 lattice values at ``(k s, j s)``.
    s
        Lattice spacing (voxels).
    w
        ``(s,)`` float32 weights ``np.float32(r / s)``.
    z0
        First Z of ``out``.
    tmp
        ``(2, nxc)`` float32 scratch.
    out, row
        ``(nz, rows, nx)`` float32; row ``row`` is written: ``B[z, j] = L[jz, j] + (L[jz + 1,
        j] - L[jz, j]) * w[rz]`` along Z first, then ``B[z, jx] + (B[z, jx + 1] - B[z, jx])
        * w[rx]`` along X.
    """
    nzo, _, nx = out.shape
    nxc = lattice.shape[1]
    for zi in range(nzo):
        z = z0 + zi
        jz = z // s
        wz = w[z - jz * s]
        for j in range(nxc):
            a = lattice[jz, j]
            tmp[0, j] = a + (lattice[jz + 1, j] - a) * wz
        for j in range(nxc - 1):
            tmp[1, j] = tmp[0, j + 1] - tmp[0, j]
        for r in range(min(s, nx)):
            wx = w[r]
            for j in range((nx - 1 - r) // s + 1):  # x = j s + r < nx
                out[zi, row, j * s + r] = tmp[0, j] + tmp[1, j] * wx


@kernel
def solvent_block(
    lattices: np.ndarray, y0: int, s: int, w: np.ndarray, z0: int, out: np.ndarray
) -> None:
    """Solvent rows ``[y0, y0 + rows)`` of Z rows ``[z0, z0 + nz)`` (in place).

    Parameters
    ----------
    lattices
        ``(P, nzc, nxc)`` float32 lattice planes ``k = y0 // s, ..., (y1 - 1) // s + 1``.
    y0
        First Y row of ``out``.
    s, w
        Lattice spacing and its ``(s,)`` float32 weights ``np.float32(r / s)``.
    z0
        First Z row of ``out``.
    out
        ``(nz, rows, nx)`` float32: row ``y = k s + r`` is plane ``A_k`` when ``r = 0`` (written
        there directly), else ``A_k + (A_{k+1} - A_k) * w[r]``.
    """
    nzo, rows, nx = out.shape
    y1 = y0 + rows
    k0 = y0 // s
    tmp = np.empty((2, lattices.shape[2]), dtype=np.float32)
    first = np.empty((nzo, 1, nx), dtype=np.float32)  # plane k0 when its row precedes y0
    last = np.empty((nzo, 1, nx), dtype=np.float32)  # the plane at or after y1
    lo, lo_row = (out, k0 * s - y0) if k0 * s == y0 else (first, 0)
    _lattice_plane(lattices[0], s, w, z0, tmp, lo, lo_row)
    for k in range(k0, (y1 - 1) // s + 1):
        up, up_row = (out, (k + 1) * s - y0) if (k + 1) * s < y1 else (last, 0)
        _lattice_plane(lattices[k - k0 + 1], s, w, z0, tmp, up, up_row)
        ya, yb = max(y0, k * s + 1), min(y1, (k + 1) * s)
        for z in range(nzo):
            for y in range(ya, yb):
                wr = w[y - k * s]
                for x in range(nx):
                    a = lo[z, lo_row, x]
                    out[z, y - y0, x] = a + (up[z, up_row, x] - a) * wr
        lo, lo_row = up, up_row


@kernel
def scatter_box(
    zyx: np.ndarray,
    values: np.ndarray,
    position: np.ndarray,
    y0: int,
    labels: np.ndarray,
    density: np.ndarray,
    classes: np.ndarray,
    instances: np.ndarray,
) -> int:
    """Write one particle's voxels that fall in a slab (in place); the voxels written.

    Parameters
    ----------
    zyx
        ``(m, 3)`` integer ``(z, y, x)`` offsets from the position, sorted by Y (a
        :class:`~faket_dask.stages.sample.rotation.VoxelBox`); every voxel inside the volume.
    values
        ``(m,)`` float32 densities.
    position
        ``(3,)`` int64 ``(z, y, x)`` position.
    y0
        The slab's first volume row.
    labels
        ``(2,)`` int64 class id and instance id.
    density, classes, instances
        ``(Z, rows, X)`` slab arrays holding volume rows ``[y0, y0 + rows)``.
    """
    rows = density.shape[1]
    pz, py, px = position[0], position[1], position[2]
    lo, hi = y0 - py, y0 + rows - py  # the offsets dy that land in the slab
    a, b = 0, len(values)
    while a < b:  # first voxel with dy >= lo
        mid = (a + b) // 2
        if zyx[mid, 1] < lo:
            a = mid + 1
        else:
            b = mid
    cls, inst = labels[0], labels[1]
    i = a
    while i < len(values) and zyx[i, 1] < hi:
        z, y, x = pz + zyx[i, 0], py + zyx[i, 1] - y0, px + zyx[i, 2]
        density[z, y, x] = values[i]
        classes[z, y, x] = cls
        instances[z, y, x] = inst
        i += 1
    return i - a
