"""The particle sequence: classes and orientations drawn in order, rotated, placed by blocks.

Counted classes come first (larger templates first), then, with an occupancy target, parts of
``PART`` particles whose classes are drawn by abundance, gathered into blocks of ``BLOCK``
until their voxels reach the target; each block is placed by
:func:`~faket_dask.stages.sample.placement.place_sequence`, its larger particles first.
Rotations and candidate tests run in threads; every stream is drawn in sequence order, so
the layout does not depend on the thread count (tested with 1-3 threads). Rotating the next
parts in a worker thread while a block is placed was tried and left out: 0.06 s less wall
time and 0.25 s more CPU at 256 x 1024^2 on 2 cores.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from faket_dask.config import ParticleClassConfig
from faket_dask.errors import InputError
from faket_dask.stages.particles import random_quaternions
from faket_dask.stages.sample.objects import _BoxCache, _Particle
from faket_dask.stages.sample.placement import (
    WINDOW,
    Footprint,
    OccupancyGrid,
    footprint,
    place_sequence,
)
from faket_dask.stages.sample.rotation import Rotate, VoxelBox
from faket_dask.stages.sample.spec import BuildSpec, keyed_rng
from faket_dask.stages.templates import Template

if TYPE_CHECKING:
    import torch


__all__ = ["BLOCK", "PART", "draw_particles"]

#: Particles placed at a time: a block (the placement's window).
BLOCK = WINDOW
#: Particles drawn (and rotated) at a time while a block is filled up to the occupancy target.
PART = 256


def _orientation_boxes(
    spec: BuildSpec,
    classes: list[ParticleClassConfig],
    templates: dict[str, Template],
    rotate: Rotate,
) -> list[tuple[np.ndarray, list[VoxelBox]]]:
    """Per class: ``orientation_grid`` uniform random quaternions and their rotated boxes.

    The quaternions of class ``ci`` come from a stream keyed by ``(seed, sample_id,
    "orientation_grid", ci)``.
    """
    out = []
    g = int(spec.sample.orientation_grid or 0)
    for ci, c in enumerate(classes):
        qs = random_quaternions(keyed_rng(spec.seed, spec.sample_id, "orientation_grid", ci), g)
        out.append((qs, rotate([(templates[c.name], q) for q in qs])))
    return out


_Item = tuple[int, np.ndarray, VoxelBox, Footprint]


class _Sequence:
    """Classes, orientations and rotated boxes of particles, drawn block by block in order."""

    def __init__(
        self,
        spec: BuildSpec,
        classes: list[ParticleClassConfig],
        templates: dict[str, Template],
        occ: OccupancyGrid,
        rotate: Rotate,
    ) -> None:
        self.classes, self.templates, self.occ, self.rotate = classes, templates, occ, rotate
        self.orient_rng = keyed_rng(spec.seed, spec.sample_id, "orientations")
        grid = spec.sample.orientation_grid is not None
        self.grid = _orientation_boxes(spec, classes, templates, rotate) if grid else None
        self.fps: dict[tuple[int, int], Footprint] = {}

    def block(self, cis: list[int]) -> list[_Item]:
        """Particles of classes ``cis``: orientation, rotated box and footprint each."""
        if self.grid is None:
            qs = random_quaternions(self.orient_rng, len(cis))
            boxes = self.rotate(
                [(self.templates[self.classes[ci].name], q) for ci, q in zip(cis, qs, strict=True)]
            )
            return [
                (ci, q, box, footprint(box, self.occ))
                for ci, q, box in zip(cis, qs, boxes, strict=True)
            ]
        picks = self.orient_rng.integers(0, len(self.grid[0][0]), size=len(cis))
        out = []
        for ci, k in zip(cis, picks, strict=True):
            qs, boxes = self.grid[ci]
            key = (ci, int(k))
            if key not in self.fps:
                self.fps[key] = footprint(boxes[int(k)], self.occ)
            out.append((ci, qs[int(k)], boxes[int(k)], self.fps[key]))
        return out


class _Placer:
    """Places blocks of the particle sequence and keeps the placed particles, in order."""

    def __init__(
        self,
        spec: BuildSpec,
        rng: np.random.Generator,
        occ: OccupancyGrid,
        seq: _Sequence,
        cache: _BoxCache,
        device: str | torch.device | None = None,
    ) -> None:
        self.spec, self.rng, self.occ, self.seq, self.cache = spec, rng, occ, seq, cache
        self.device = device
        self.out: list[_Particle] = []

    def place(self, items: list[_Item]) -> int:
        """Place a block; how many of it (a prefix) were placed."""
        classes, shared = self.seq.classes, self.seq.grid is not None
        extents = np.reshape([it[3].high_offset - it[3].low_offset for it in items], (-1, 3))
        too_big = np.flatnonzero((extents > self.occ.shape).any(axis=1))
        if len(too_big):
            ci, _, box, _ = items[int(too_big[0])]
            raise InputError(
                f"particle class {classes[ci].name!r} ({box.shape} voxels when rotated) does "
                f"not fit in the {tuple(self.spec.shape)} volume; use a smaller template or "
                "a thicker sample"
            )
        pos, placed = place_sequence(
            self.occ, self.rng, [it[3] for it in items], self.spec.sample.placement_attempts
        )
        for (ci, q, box, fp), p in zip(items[:placed], pos, strict=True):
            part = _Particle(
                index=len(self.out),
                class_id=ci + 1,
                template=self.seq.templates[classes[ci].name],
                quaternion=q,
                position=p,
                box_offset=fp.low_offset,
                box_shape=fp.high_offset - fp.low_offset,
                cache=self.cache,
                voxels=fp.count,
                shared=box if shared else None,
                device=self.device,
            )
            if not shared:
                self.cache.put(part.index, box)
            self.out.append(part)
        return placed


def _fill(placer: _Placer, info: dict[str, Any]) -> None:
    """Add particles of the classes without a count until the occupancy target is covered."""
    spec, classes = placer.spec, placer.seq.classes
    target = spec.sample.resolved_occupancy()
    covered = sum(p.voxels for p in placer.out)
    volume = float(np.prod(spec.shape))
    loose = [i for i, c in enumerate(classes) if c.count is None]
    info["jammed"] = False
    if target is not None and target > 0 and loose:
        class_rng = keyed_rng(spec.seed, spec.sample_id, "classes")
        weights = np.array([classes[i].abundance or 1.0 for i in loose], dtype=np.float64)
        cum = np.cumsum(weights / weights.sum())

        def next_part() -> list[int]:  # rotated a part at a time: few beyond the goal
            picks = np.searchsorted(cum, class_rng.random(PART), side="right")
            return [loose[int(j)] for j in np.minimum(picks, len(loose) - 1)]

        covered = _fill_blocks(placer, next_part, covered, target * volume, info)
    info["particle_occupancy"] = covered / volume


def _fill_blocks(
    placer: _Placer,
    next_part: Callable[[], list[int]],
    covered: int,
    goal: float,
    info: dict[str, Any],
) -> int:
    """Place blocks of the sequence until ``goal`` voxels are covered; the voxels covered."""
    spec, classes = placer.spec, placer.seq.classes
    while covered < goal:
        items: list[_Item] = []
        drawn = 0  # voxels of items
        while len(items) < BLOCK and covered + drawn < goal:
            part = placer.seq.block(next_part())
            items += part
            drawn += sum(it[3].count for it in part)
        sums = covered + np.cumsum([it[3].count for it in items])
        items = items[: int(np.searchsorted(sums, goal, side="left")) + 1]
        items.sort(key=lambda it: -it[3].count)  # larger first: smaller ones fill the gaps
        placed = placer.place(items)
        covered += sum(it[3].count for it in items[:placed])
        if placed < len(items):
            info["jammed"] = True
            warnings.warn(
                f"sample {spec.sample_id}: occupancy stopped at {covered / np.prod(spec.shape):.3f}"
                f" of the {spec.sample.resolved_occupancy()} asked: a "
                f"{classes[items[placed][0]].name!r} particle found no free place; lower "
                "sample.occupancy",
                stacklevel=5,
            )
            break
    return covered


def draw_particles(
    spec: BuildSpec,
    rng: np.random.Generator,
    occ: OccupancyGrid,
    kinds: tuple[list[ParticleClassConfig], dict[str, Template]],
    cache: _BoxCache,
    info: dict[str, Any],
    rotate: Rotate,
    device: str | torch.device | None = None,
) -> list[_Particle]:
    """Particles: classes and orientations from their own streams, positions from ``rng``.

    Particle ``i``'s class (occupancy mode) and orientation are the ``i``-th draws of streams
    keyed by ``(seed, sample_id, "classes")`` and ``(seed, sample_id, "orientations")``
    (with ``sample.orientation_grid``: an index into the class's grid of rotations). Counted
    classes come first (larger templates first), then, with an occupancy target, blocks of
    the sequence up to the particle whose voxels reach it, each placed larger particles first.
    Blocks are placed in batched rounds (:func:`place_sequence`).
    """
    classes, templates = kinds
    seq = _Sequence(spec, classes, templates, occ, rotate)
    placer = _Placer(spec, rng, occ, seq, cache, device)
    counted = [i for i, c in enumerate(classes) if c.count]
    counted.sort(key=lambda i: -templates[classes[i].name].volume_voxels)
    plan = [ci for ci in counted for _ in range(int(classes[ci].count or 0))]
    for k in range(0, len(plan), BLOCK):
        items = seq.block(plan[k : k + BLOCK])
        placed = placer.place(items)
        if placed < len(items):
            ci = items[placed][0]
            done = sum(1 for p in placer.out if p.class_id == ci + 1)
            raise InputError(
                f"could not place particle {done + 1} of class {classes[ci].name!r} without "
                f"overlap after {spec.sample.placement_attempts} tries; lower the counts or "
                "sample.occupancy, or enlarge the volume"
            )
    _fill(placer, info)
    return placer.out
