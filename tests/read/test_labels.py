"""Class-mask outlines of the preview: the projected class map, the scale bar's length."""

from __future__ import annotations

import numpy as np
import pytest

from faket_dask.read.labels import class_colors, nice_length_nm, projected_class_map


def test_projected_class_map_at_zero_degrees_is_the_longest_class_along_z():
    rng = np.random.default_rng(3)
    mask = np.zeros((12, 10, 14), dtype=np.uint8)
    mask[2:6, 1:5, 2:9] = 1
    mask[5:11, 3:8, 6:12] = 2  # overlaps class 1 in (y, x): the longer path wins
    mask[rng.random(mask.shape) < 0.02] = 0
    got = projected_class_map(mask, [0.0], 14, [1, 2])[0]
    counts = np.stack([(mask == c).sum(axis=0) for c in (1, 2)])  # (2, Y, X) path lengths
    want = np.where(counts.max(axis=0) >= 1, counts.argmax(axis=0) + 1, 0)
    tie = counts[0] == counts[1]
    np.testing.assert_array_equal(got[~tie], want[~tie])
    assert set(np.unique(got)) == {0, 1, 2}


def test_projected_class_map_follows_the_tilt():
    mask = np.zeros((16, 4, 32), dtype=np.uint8)
    mask[2:4, :, 15:17] = 1  # a short column near the top of the volume (z small), centred in x
    at0 = projected_class_map(mask, [0.0], 32, [1])[0]
    at60 = projected_class_map(mask, [60.0], 32, [1])[0]
    x0, x60 = np.flatnonzero(at0[0]).mean(), np.flatnonzero(at60[0]).mean()
    # detector offset dx·cos θ − dz·sin θ with dz = 3 − 8 = −5 (voxel centres): about +4.3 px
    assert x60 - x0 == pytest.approx(5 * np.sin(np.radians(60)), abs=1.0)


@pytest.mark.parametrize(
    "width,want", [(640.0, 100.0), (100.0, 20.0), (51.2, 10.0), (3.0, 0.5), (2560.0, 500.0)]
)
def test_scale_bar_length_is_round_and_about_a_quarter(width, want):
    assert nice_length_nm(width) == pytest.approx(want)


def test_class_colours_are_distinct_and_fixed_by_id():
    colors = class_colors({1: "a", 2: "b", 3: "c"})
    assert len(set(colors.values())) == 3
    assert class_colors({2: "x"})[2] == colors[2]
