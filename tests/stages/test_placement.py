"""Batched placement: against a brute-force check of the occupancy grid, coarse grids, give-ups."""

from __future__ import annotations

import numpy as np
import pytest

from faket_dask.stages.particles import quaternions_to_matrices, random_quaternions
from faket_dask.stages.sample.placement import OccupancyGrid, footprint, place_sequence
from faket_dask.stages.sample.rotation import voxel_box
from faket_dask.stages.templates import builtin_template, rotate_template

pytestmark = pytest.mark.timeout(120)


def _footprints(occ: OccupancyGrid, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    tpls = [builtin_template(s, 10.0, scale=0.6) for s in ("rod", "lshape", "sphere")]
    qs = random_quaternions(rng, n)
    boxes = [
        voxel_box(rotate_template(tpls[i % 3], quaternions_to_matrices(q)[0]))
        for i, q in enumerate(qs)
    ]
    return boxes, [footprint(box, occ) for box in boxes]


def _cells(occ: OccupancyGrid, fp, pos) -> np.ndarray:
    """Brute force: the flat grid cells of a footprint's voxels at ``pos``."""
    return np.unique(((fp.voxels + pos) // occ.b) @ occ.strides)


@pytest.mark.parametrize(("b_budget", "n"), [(10**9, 30), (4000, 12)])
def test_placed_particles_take_free_cells_only_and_all_of_theirs(b_budget, n):
    occ = OccupancyGrid((20, 40, 40), b_budget)
    for z, y, x in np.random.default_rng(1).integers(0, 36, size=(6, 3)):  # taken blocks
        occ.mark([(np.array([z % 16, y, x]), np.ones((4, 4, 4), bool))])
    before = occ.flat.copy()
    boxes, fps = _footprints(occ, n)
    pos, placed = place_sequence(occ, np.random.default_rng(2), fps, attempts=500)
    assert placed == n and pos.shape == (n, 3)
    owner = np.zeros(occ.flat.size, dtype=np.int64)
    for k, (fp, p, box) in enumerate(zip(fps, pos, boxes, strict=True)):
        lo = p + box.offset  # the whole box lies inside the volume
        assert (lo >= 0).all() and (lo + np.array(box.shape) <= occ.shape).all()
        cells = _cells(occ, fp, p)
        assert not before[cells].any()  # free before
        assert (owner[cells] == 0).all()  # and no two particles share a cell
        owner[cells] = k + 1
    # the grid now holds exactly the old cells plus every particle's own cells
    np.testing.assert_array_equal(occ.flat, before | (owner > 0))


def test_coarse_test_cells_cover_every_phase():
    occ = OccupancyGrid((30, 30, 30), 300)
    assert occ.b >= 3
    _, fps = _footprints(occ, 6, seed=4)
    for fp in fps:
        test = {tuple(c) for c in fp.test_cells}
        for r in np.ndindex(occ.b, occ.b, occ.b):
            p = np.array(r) + 3 * occ.b
            exact = (fp.voxels + p) // occ.b - p // occ.b
            assert {tuple(c) for c in exact} <= test


def test_a_particle_that_finds_no_place_ends_the_prefix():
    occ = OccupancyGrid((20, 24, 24), 10**9)
    _, fps = _footprints(occ, 200, seed=3)
    pos, placed = place_sequence(occ, np.random.default_rng(0), fps, attempts=50)
    assert 0 < placed < 200 and len(pos) == placed
    # exactly the placed prefix is marked (later particles placed ahead were taken back)
    expect = np.zeros_like(occ.flat)
    for fp, p in zip(fps[:placed], pos, strict=True):
        expect[_cells(occ, fp, p)] = True
    np.testing.assert_array_equal(occ.flat, expect)
    # and the exhaustive search confirms that the next one has no free place
    k = placed
    fp = fps[k]
    low, high = -fp.low_offset, occ.shape - fp.high_offset
    free = [
        p
        for p in np.ndindex(*(high - low + 1))
        if not occ.flat[_cells(occ, fp, np.array(p) + low)].any()
    ]
    assert free == []


def test_same_stream_same_positions():
    _, fps = _footprints(OccupancyGrid((20, 40, 40), 10**9), 40)
    runs = []
    for _ in range(2):
        occ = OccupancyGrid((20, 40, 40), 10**9)
        runs.append(place_sequence(occ, np.random.default_rng(9), fps, attempts=100)[0])
    np.testing.assert_array_equal(runs[0], runs[1])


def _layout_bytes(monkeypatch, threads: str, **sample) -> tuple[str, dict]:
    """The particle table (CSV) and info of a small layout built with ``threads`` threads."""
    import warnings

    from faket_dask.config import config_from_dict
    from faket_dask.stages.sample import BuildSpec, build_layout

    monkeypatch.setenv("FAKET_DASK_SAMPLE_THREADS", threads)
    sample = {"membranes": {"vesicles": 0, "planar": 0}, "fiducials": {"count": 0}, **sample}
    cfg = config_from_dict(
        {"seed": 3, "tilts": {"shape": [64, 64], "pixel_spacing": 10.0}, "sample": sample}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a jammed fill warns
        layout = build_layout(BuildSpec.from_config(cfg, 1))
    return layout.particles.to_csv(), dict(layout.info)


_SMALL = [
    {"name": "ball", "template": "builtin:sphere:0.5", "abundance": 1.0},
    {"name": "rod", "template": "builtin:rod:0.5", "abundance": 1.0},
    {"name": "corner", "template": "builtin:lshape:0.5", "abundance": 2.0},
]


@pytest.mark.parametrize(
    "sample",
    [
        {"thickness": 32, "occupancy": 0.12, "particles": _SMALL},  # several blocks
        {"thickness": 16, "occupancy": 0.55, "particles": _SMALL},  # jammed
        {  # counted classes in several blocks, then a fill
            "thickness": 32,
            "occupancy": 0.1,
            "particles": [{**_SMALL[0], "abundance": None, "count": 40}, *_SMALL[1:]],
        },
    ],
)
def test_the_layout_does_not_depend_on_the_thread_count(monkeypatch, sample):
    """Rotations and candidate tests in threads place the particles a single thread
    places, blocks and jams included."""
    from faket_dask.stages.sample import sequence

    monkeypatch.setattr(sequence, "BLOCK", 24)  # many blocks in a small volume
    monkeypatch.setattr(sequence, "PART", 6)
    one = _layout_bytes(monkeypatch, "1", **sample)
    assert len(one[0].splitlines()) > 30  # a header and enough particles to span blocks
    if sample["occupancy"] > 0.5:
        assert one[1]["jammed"]
    for threads in ("2", "3"):
        assert _layout_bytes(monkeypatch, threads, **sample) == one
