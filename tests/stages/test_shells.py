"""Membranes and beads as runs (compiled kernels) against their dense masks (the builder-2 code).

The runs of a vesicle, a disc or a bead must hold exactly the voxels of its ``region`` mask:
random objects with integer and fractional centres, cut by the volume's faces or centred
outside it, axis-aligned normals, the thinnest bilayer, and voxels placed exactly on a bound
(where one rounding more or less would flip them). Testing and marking runs on the occupancy
grid (one cell per voxel and coarse cells) must agree with the dense NumPy test and mark, and
placing membranes and beads must make the same decisions as builder 2's dense placement
(kept here): same objects, same grid, same stream state afterwards.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from faket_dask.errors import InputError
from faket_dask.stages.sample import layout
from faket_dask.stages.sample.objects import _Bead, _count_voxels, _Disc, _Object, _Vesicle
from faket_dask.stages.sample.placement import OccupancyGrid

pytestmark = pytest.mark.timeout(120)


# --------------------------------------------------------------- the NumPy reference


def _ref_place(occ, rng, pieces_at, low, high, probe, attempts):
    """Builder 2's ``_place``: each candidate's dense pieces, tested and marked."""
    tried = 0
    while tried < attempts:
        n = min(layout._BATCH, attempts - tried)
        cand = rng.integers(low, high + 1, size=(n, 3), dtype=np.int64)
        tried += n
        if probe is not None:
            cand = cand[~occ.taken(cand + probe)]
        for pos in cand:
            pieces = pieces_at(pos)
            if not any(m.any() for _, m in pieces):
                continue
            if occ.free(pieces):
                occ.mark(pieces)
                return pos, pieces
    return None


def _ref_place_object(occ, rng, make, bounds, probe, attempts, refusal):
    low, high = bounds
    placed = _ref_place(occ, rng, lambda p: list(make(p).chunks()), low, high, probe, attempts)
    if placed is None:
        raise InputError(refusal)
    return make(placed[0])


def _paint(runs: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The dense mask of the box ``[lo, hi)`` that ``runs`` cover (each voxel at most once)."""
    out = np.zeros(tuple(int(v) for v in np.maximum(hi - lo, 0)), dtype=np.int64)
    for z, y, x0, x1 in runs:
        assert x0 < x1 and lo[2] <= x0 and x1 <= hi[2]
        out[z - lo[0], y - lo[1], x0 - lo[2] : x1 - lo[2]] += 1
    assert out.max(initial=0) <= 1  # no voxel twice
    return out.astype(bool)


# --------------------------------------------------------------- random objects


def _centre(rng: np.random.Generator, shape: tuple, fractional: bool) -> np.ndarray:
    """Anywhere in the volume or a few voxels past a face; integers unless ``fractional``."""
    c = rng.integers(-4, np.array(shape) + 4).astype(np.float64)
    return c + rng.uniform(-0.5, 0.5, 3) if fractional else c


def _normal(rng: np.random.Generator, k: int) -> np.ndarray:
    v = rng.standard_normal(3)
    if k % 5 == 1:  # one component exactly zero (or minus zero)
        v[rng.integers(3)] = 0.0 if k % 2 else -0.0
    elif k % 5 == 2:  # along an axis, either sign
        v = np.zeros(3)
        v[rng.integers(3)] = rng.choice([-1.0, 1.0])
    return v / np.linalg.norm(v)


def _objects(seed: int, n: int, volume: tuple | None = None) -> list[_Object]:
    """Vesicles, discs and beads in random volumes (or all in ``volume``)."""
    rng = np.random.default_rng(seed)
    out: list[_Object] = []
    for k in range(n):
        shape = tuple(int(v) for v in rng.integers(3, 48, 3)) if volume is None else volume
        c = _centre(rng, shape, fractional=k % 4 == 3)
        half = max(float(rng.uniform(0.2, 3.0)), math.sqrt(3) / 2) if k % 6 else math.sqrt(3) / 2
        radius = float(rng.uniform(0.3, 28.0))
        common = {"class_id": 1, "centre": c, "density": 1.0, "shape": shape}
        if k % 3 == 0:
            out.append(_Vesicle(radius=radius, half=half, leaflets=True, **common))
        elif k % 3 == 1:
            out.append(
                _Disc(normal=_normal(rng, k), radius=radius, half=half, leaflets=False, **common)
            )
        else:
            out.append(_Bead(radius=radius / 2, **common))
    return out


def _on_bounds(seed: int, n: int) -> list[_Object]:
    """Objects with one voxel exactly on a bound (``<=`` holds there, by the same rounding)."""
    rng = np.random.default_rng(seed)
    out: list[_Object] = []
    for k in range(n):
        shape = (30, 31, 29)
        c = _centre(rng, shape, fractional=k % 2 == 1)
        v = c + rng.integers(-9, 10, 3)  # the voxel on the bound
        dz, dy, dx = v - c
        d2 = (dz**2 + dy**2) + dx**2
        common = {"class_id": 1, "centre": c, "density": 1.0, "shape": shape}
        if k % 3 == 0:  # abs(sqrt(d2) - radius) == half, from inside or outside
            radius = float(rng.uniform(0.5, 8.0))
            half = abs(float(np.sqrt(d2)) - radius)
            if half > 0:
                out.append(_Vesicle(radius=radius, half=half, leaflets=True, **common))
        elif k % 3 == 1:  # abs(t) == half for that voxel
            n = _normal(rng, k)
            t = (dz * n[0] + dy * n[1]) + dx * n[2]
            if abs(t) > 0:
                out.append(_Disc(normal=n, radius=20.0, half=abs(t), leaflets=True, **common))
        elif d2 > 0:  # radius**2 == d2 when the root squares back exactly
            out.append(_Bead(radius=float(np.sqrt(d2)), **common))
    return out


# --------------------------------------------------------------- tests


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_runs_hold_exactly_the_region_mask(seed):
    objs = _objects(seed, 300)
    kinds = {type(o) for o in objs}
    assert kinds == {_Vesicle, _Disc, _Bead}
    empty = 0
    for o in objs:
        runs = o.runs()
        assert runs.dtype == np.int64 and runs.shape[1:] == (4,)
        want = o.region(o.lo, o.hi)[1]
        np.testing.assert_array_equal(_paint(runs, o.lo, o.hi), want)
        # the fallback from the dense chunks gives the same runs, in the same order
        np.testing.assert_array_equal(_Object.runs(o), runs)
        assert _count_voxels(o) == int(want.sum())
        empty += not len(runs)
    assert 0 < empty < len(objs)  # objects wholly outside the volume are exercised


@pytest.mark.parametrize("seed", [3, 4])
def test_voxels_on_a_bound_are_kept_as_the_dense_mask_keeps_them(seed):
    objs = _on_bounds(seed, 240)
    assert len(objs) > 150
    for o in objs:
        want = o.region(o.lo, o.hi)[1]
        np.testing.assert_array_equal(_paint(o.runs(), o.lo, o.hi), want)


def _grid(rng: np.random.Generator, shape: tuple, b: int, density: float) -> OccupancyGrid:
    budget = 10**9 if b == 1 else int(np.prod(-(-np.array(shape) // b)))
    occ = OccupancyGrid(shape, budget)
    assert occ.b == b
    occ.flat[:] = rng.random(occ.flat.size) < density
    return occ


@pytest.mark.parametrize("b", [1, 2, 3])
@pytest.mark.parametrize("density", [0.0005, 0.01])
def test_runs_free_and_mark_match_the_dense_test_and_mark(b, density):
    rng = np.random.default_rng(b + int(1e4 * density))
    shape = (26, 33, 37)
    outcomes = set()
    for k, o in enumerate(_objects(10 + b, 90, shape)):
        runs = o.runs()
        pieces = list(o.chunks())
        occ = _grid(rng, shape, b, density)
        ref = OccupancyGrid(shape, 10**9 if b == 1 else occ.flat.size)
        ref.flat[:] = occ.flat
        free = occ.free_runs(runs)
        assert free == ref.free(pieces)
        outcomes.add(free)
        if k % 2:  # mark over a taken grid as well as a free one
            occ.mark_runs(runs)
            ref.mark(pieces)
            np.testing.assert_array_equal(occ.flat, ref.flat)
    assert outcomes == {True, False}


def _spec(shape: tuple, vesicles: int, planar: int, beads: int, **membranes):
    from faket_dask.config import config_from_dict
    from faket_dask.stages.sample import BuildSpec

    nz, ny, nx = shape
    cfg = {
        "seed": 3,
        "tilts": {"shape": [ny, nx], "pixel_spacing": 10.0},
        "sample": {
            "thickness": nz,
            "membranes": {"vesicles": vesicles, "planar": planar, **membranes},
            "fiducials": {"count": beads, "radius": 30.0},
            "placement_attempts": 300,
        },
    }
    return BuildSpec.from_config(config_from_dict(cfg))


def _draw(spec, budget: int | None, monkeypatch, ref: bool) -> tuple:
    if ref:
        monkeypatch.setattr(layout, "_place_object", _ref_place_object)
    rng = np.random.default_rng(11)
    occ = OccupancyGrid(spec.shape, budget)
    try:
        objs = layout._draw_membranes(spec, rng, occ, 7)
        objs += layout._draw_beads(spec, rng, occ, 8)
        err = None
    except InputError as e:
        objs, err = [], str(e)
    monkeypatch.undo()
    keys = ("centre", "radius", "half", "normal", "lo", "hi")
    fields = [[np.asarray(getattr(o, k)).tolist() for k in keys if hasattr(o, k)] for o in objs]
    return fields, err, occ.flat.copy(), occ.b, rng.bit_generator.state


@pytest.mark.parametrize("b", [1, 2, 3])
@pytest.mark.parametrize(
    ("shape", "counts", "membranes"),
    [
        ((24, 70, 64), (5, 2, 40), {"vesicle_radius": (60.0, 150.0)}),  # cut by faces, refused
        ((16, 50, 50), (2, 1, 12), {"thickness": 5.0, "planar_radius": (100.0, 900.0)}),
        ((20, 40, 40), (1, 0, 0), {"vesicle_radius": (900.0, 1200.0)}),  # shells outside
        ((12, 30, 30), (3, 3, 0), {}),  # too many: a refusal
    ],
)
def test_placement_makes_the_dense_placements_decisions(shape, counts, membranes, b, monkeypatch):
    spec = _spec(shape, *counts, **membranes)
    budget = None if b == 1 else int(np.prod(-(-np.array(shape) // b)))
    new = _draw(spec, budget, monkeypatch, ref=False)
    old = _draw(spec, budget, monkeypatch, ref=True)
    assert new[3] == old[3] == b
    assert new[0] == old[0] and new[1] == old[1]
    np.testing.assert_array_equal(new[2], old[2])
    assert new[4] == old[4]  # the stream drew the same numbers
