"""Rendering a layout's rows into a slab: solvent, particles' voxel lists, membranes and beads.

The solvent and the particles are written by compiled kernels
(:mod:`~faket_dask.stages.sample.render_kernels`): each particle that meets the slab writes the
rows of its :class:`~faket_dask.stages.sample.rotation.VoxelBox` (voxels sorted by Y row) that
fall in the slab, straight from the box. Particles never overlap, so the order of the writes
does not matter; membranes and beads are painted after them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from faket_dask.stages.sample.objects import _BoxCache, _Object, _Particle
from faket_dask.stages.sample.render_kernels import scatter_box, solvent_block, solvent_lattice
from faket_dask.stages.sample.rotation import VoxelBox, _threads
from faket_dask.stages.sample.spec import keyed_rng
from faket_dask.stages.templates import Template

if TYPE_CHECKING:
    from faket_dask.stages.sample.layout import SampleLayout

#: Rotates ``(template, quaternion)`` pairs into voxel lists (the layout's rotation).
Rotate = Callable[[list[tuple[Template, np.ndarray]]], list[VoxelBox]]

__all__ = ["Renderer", "scatter_particles", "solvent_rows"]


def scatter_particles(
    slab: tuple[np.ndarray, np.ndarray, np.ndarray],
    y0: int,
    boxes: list[VoxelBox],
    positions: np.ndarray,
    labels: tuple[np.ndarray, np.ndarray],
) -> int:
    """Write particles into a slab (in place); the voxels written.

    Particles must not overlap: groups of them are written by threads at once.

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
    pos = np.ascontiguousarray(positions, dtype=np.int64).reshape(-1, 3)
    ids = np.stack([np.asarray(labels[0]), np.asarray(labels[1])], axis=1).astype(np.int64)

    def run(part: range) -> int:  # the kernel releases the GIL; particles never overlap
        return sum(
            scatter_box(boxes[j].zyx, boxes[j].values, pos[j], y0, ids[j], *slab) for j in part
        )

    n = len(boxes)
    if n < 64 or _threads() == 1:
        return run(range(n))
    cuts = np.linspace(0, n, _threads() + 1).astype(int)
    with ThreadPoolExecutor(_threads()) as pool:
        return sum(pool.map(run, [range(a, b) for a, b in itertools.pairwise(cuts)]))


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
        pos = np.array([p.position for p in particles], dtype=np.int64).reshape(-1, 3)
        cls = np.array([p.class_id for p in particles], dtype=np.int64)
        scatter_particles(slab, y0, self.boxes(particles, y1), pos, (cls, ids[parts]))
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
    level, rel, corr = layout.solvent
    out = np.empty((nz, y1 - y0, nx), dtype=np.float32)
    if level <= 0 or rel <= 0:
        out.fill(max(level, 0.0))
        return out
    spec = layout.spec
    seed, sid = (0, 0) if spec is None else (spec.seed, spec.sample_id)
    s = max(1, round(corr / layout.pixel_spacing))
    nzc, nxc = (nz - 1) // s + 2, (nx - 1) // s + 2
    k0, k1 = y0 // s, (y1 - 1) // s + 1
    lattices = np.empty((k1 - k0 + 1, nzc, nxc), dtype=np.float32)

    def draw(k: int) -> None:  # the kernel releases the GIL
        solvent_lattice(keyed_rng(seed, sid, "solvent", k), level, rel, lattices[k - k0])

    w = np.array([np.float32(r / s) for r in range(s)], dtype=np.float32)
    zs = [(int(c[0]), int(c[-1]) + 1) for c in np.array_split(np.arange(nz), _threads()) if len(c)]

    def block(z: tuple[int, int]) -> None:  # the kernel releases the GIL
        solvent_block(lattices, y0, s, w, z[0], out[z[0] : z[1]])

    with ThreadPoolExecutor(_threads()) as pool:
        list(pool.map(draw, range(k0, k1 + 1)))
        list(pool.map(block, zs))
    return out
