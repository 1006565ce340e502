"""Placement's numba kernels against plain NumPy gathers (the builder-2 code, kept here).

Random voxel sets on random occupancy grids with one cell per voxel and coarse cells
(``b`` = 2, 3), candidates anywhere their box fits, the volume's faces and corners included:
footprints, the free test, marking and unmarking, and the first-wins pass of the
bounding-sphere check must agree exactly with the independent NumPy implementation.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from faket_dask.stages.sample.placement import (
    Footprint,
    OccupancyGrid,
    _Bank,
    _resolve,
    footprint,
)
from faket_dask.stages.sample.rotation import VoxelBox

pytestmark = pytest.mark.timeout(120)

SHAPE = (23, 31, 29)


# --------------------------------------------------------------- the NumPy reference


def _flat(cells: np.ndarray, strides: np.ndarray) -> np.ndarray:
    return cells[:, 0] * strides[0] + cells[:, 1] * strides[1] + cells[:, 2] * strides[2]


def _ref_footprint(vox: np.ndarray, occ: OccupancyGrid) -> tuple:
    """Low and high offsets, radius and test cells (``(c, 3)``, sorted) of a voxel set."""
    vox = vox.astype(np.int64)
    low, high = vox.min(axis=0), vox.max(axis=0) + 1
    radius = float(np.sqrt(float((vox * vox).sum(axis=1).max())))
    if occ.b == 1:
        return low, high, radius, vox
    cells = vox // occ.b
    lo = cells.min(axis=0)
    dense = np.zeros(tuple(cells.max(axis=0) - lo + 2), dtype=bool)
    for sh in np.ndindex(2, 2, 2):
        dense[tuple((cells - lo + np.array(sh)).T)] = True
    return low, high, radius, np.argwhere(dense) + lo


def _ref_exact(occ: OccupancyGrid, vox: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Flat cells of the voxels at ``pos``."""
    return np.unique(_flat((vox.astype(np.int64) + pos) // occ.b, occ.strides))


def _ref_free(occ: OccupancyGrid, fps: list[Footprint], which, positions) -> np.ndarray:
    """The gather test: dilated cells at phase 0, then (coarse grids) the exact cells."""
    out = np.zeros(len(which), dtype=bool)
    for j, (f, p) in enumerate(zip(which, positions, strict=True)):
        fp = fps[f]
        cells = _ref_footprint(fp.voxels, occ)[3]
        test = _flat(p // occ.b + cells, occ.strides)
        out[j] = not occ.flat[test].any()
        if occ.b > 1 and not out[j]:
            out[j] = not occ.flat[_ref_exact(occ, fp.voxels, p)].any()
    return out


def _ref_keep(positions: np.ndarray, radii: np.ndarray, slack: float) -> np.ndarray:
    """Every pair by brute force; a later one loses to an earlier one still kept."""
    keep = np.ones(len(positions), dtype=bool)
    for j in range(len(positions)):
        for i in range(j):
            d = np.sqrt(((positions[i] - positions[j]) ** 2).sum())
            if keep[i] and d <= radii[i] + radii[j] + slack:
                keep[j] = False
                break
    return keep


# --------------------------------------------------------------- random inputs


def _blobs(rng: np.random.Generator, n: int, dtype: type) -> list[np.ndarray]:
    """Random voxel sets: a random ball's voxels, thinned, around a random offset."""
    out = []
    for _ in range(n):
        r = rng.uniform(1.0, 5.5)
        g = np.argwhere(np.ones((13, 13, 13), bool)) - 6
        g = g[(g * g).sum(axis=1) <= r * r]
        g = g[rng.random(len(g)) < 0.7] if len(g) > 4 else g
        g = g + rng.integers(-2, 3, size=3)
        out.append(g[np.lexsort((g[:, 2], g[:, 0], g[:, 1]))].astype(dtype))
    return out


def _fps(rng: np.random.Generator, occ: OccupancyGrid, n: int) -> list[Footprint]:
    boxes = [VoxelBox(v, np.ones(len(v), np.float32)) for v in _blobs(rng, n, np.int8)]
    return [footprint(box, occ) for box in boxes]


def _grid(rng: np.random.Generator, b: int, density: float) -> OccupancyGrid:
    budget = {1: 10**9, 2: int(np.prod(SHAPE)) // 8 + 2000, 3: int(np.prod(SHAPE)) // 27 + 600}
    occ = OccupancyGrid(SHAPE, budget[b])
    assert occ.b == b
    occ.flat[:] = rng.random(occ.flat.size) < density
    return occ


def _positions(rng: np.random.Generator, fps: list[Footprint], which, occ) -> np.ndarray:
    """Uniform positions where each box fits; a third at a face, some at a corner."""
    low = np.stack([-fps[f].low_offset for f in which])
    high = occ.shape - np.stack([fps[f].high_offset for f in which])
    pos = rng.integers(low, high + 1)
    face = rng.random(len(which)) < 0.33
    axis = rng.integers(0, 3, size=len(which))
    at_high = rng.random(len(which)) < 0.5
    rows = np.flatnonzero(face)
    pos[rows, axis[rows]] = np.where(at_high[:, None], high, low)[rows, axis[rows]]
    pos[:4] = [low[0], high[1], np.where([True, False, True], low[2], high[2]), high[3]]  # corners
    return pos


# --------------------------------------------------------------- tests


@pytest.mark.parametrize("b", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_footprints_match_numpy(b, dtype):
    rng = np.random.default_rng(b)
    occ = _grid(rng, b, 0.0)
    for vox in _blobs(rng, 40, dtype):
        fp = footprint(VoxelBox(vox, np.ones(len(vox), np.float32)), occ)
        low, high, radius, cells = _ref_footprint(vox, occ)
        np.testing.assert_array_equal(fp.low_offset, low)
        np.testing.assert_array_equal(fp.high_offset, high)
        assert fp.radius == radius and fp.count == len(vox)
        np.testing.assert_array_equal(fp.test_cells, cells)


@pytest.mark.parametrize("b", [1, 2, 3])
@pytest.mark.parametrize("density", [0.002, 0.02, 0.2])
def test_free_test_matches_the_numpy_gather(b, density):
    rng = np.random.default_rng(int(100 * b + 1000 * density))
    occ = _grid(rng, b, density)
    fps = _fps(rng, occ, 30)
    seq = [fps[int(i)] for i in rng.integers(0, len(fps), size=60)]  # repeats: shared footprints
    bank = _Bank(occ, seq)
    which = rng.integers(0, len(seq), size=3000)
    pos = _positions(rng, seq, which, occ)
    got = bank.free(occ, which, pos)
    want = _ref_free(occ, seq, which, pos)
    np.testing.assert_array_equal(got, want)
    assert 0 < want.sum() < len(want) or density == 0.002  # both outcomes are exercised


@pytest.mark.parametrize("b", [1, 2, 3])
def test_marks_match_the_numpy_scatter(b):
    rng = np.random.default_rng(7 + b)
    occ = _grid(rng, b, 0.05)
    fps = _fps(rng, occ, 20)
    bank = _Bank(occ, fps)
    which = rng.integers(0, len(fps), size=200)
    pos = _positions(rng, fps, which, occ)
    for value in (True, False):
        want = occ.flat.copy()
        for f, p in zip(which, pos, strict=True):
            want[_ref_exact(occ, fps[f].voxels, p)] = value
        bank.mark(occ, which, pos, value)
        np.testing.assert_array_equal(occ.flat, want)
    assert not occ.flat[_ref_exact(occ, fps[which[0]].voxels, pos[0])].any()


@pytest.mark.parametrize("slack", [0.0, 1.7])
def test_first_wins_matches_brute_force(slack):
    rng = np.random.default_rng(5)
    pos = rng.integers(0, 60, size=(400, 3))
    radii = rng.uniform(1.0, 4.0, size=400)
    keep = _resolve(pos, radii, slack)
    np.testing.assert_array_equal(keep, _ref_keep(pos, radii, slack))
    assert 0 < keep.sum() < len(keep)
    # the kept ones are pairwise apart
    tree = cKDTree(pos[keep].astype(float))
    pairs = tree.query_pairs(2 * radii.max() + slack, output_type="ndarray")
    r = radii[keep]
    d = np.sqrt(((pos[keep][pairs[:, 0]] - pos[keep][pairs[:, 1]]) ** 2).sum(axis=1))
    assert (d > r[pairs[:, 0]] + r[pairs[:, 1]] + slack).all()
