"""read/realism.py: the three distances, the pairing by angle and the ratio to d(A, B)."""

from __future__ import annotations

import numpy as np
import pytest

from faket_dask.read.metrics import histogram_distance
from faket_dask.read.realism import (
    format_table,
    heldout_rows,
    local_log_variance,
    summarize,
    tilt_distances,
)


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    f = np.fft.fftfreq(x.shape[-1])
    g = np.exp(-(f[:, None] ** 2 + f[None, :] ** 2) / (2 * sigma**2))
    y = np.fft.ifft2(np.fft.fft2(x) * g).real
    return (y - y.mean()) / y.std()


def test_identical_tilts_are_at_distance_zero():
    x = np.random.default_rng(0).normal(size=(64, 64))
    assert tilt_distances(x, x) == {"spectrum": 0.0, "histogram": 0.0, "texture": 0.0}


def test_texture_sees_what_the_histogram_does_not():
    """Gaussian white noise vs smoothed Gaussian noise: same histogram, other texture."""
    rng = np.random.default_rng(1)
    white = rng.normal(size=(128, 128))
    smooth = _smooth(rng.normal(size=(128, 128)), 0.05)
    d = tilt_distances(white, smooth)
    assert d["histogram"] < 0.08
    assert d["texture"] > 0.3 and d["spectrum"] > 0.5
    other_white = rng.normal(size=(128, 128))
    d2 = tilt_distances(white, other_white)
    assert d2["texture"] < 0.1 and d2["spectrum"] < d["spectrum"] / 2
    # local variance of a constant-variance field sits near log(1) after standardising
    assert abs(np.median(local_log_variance(white))) < 0.3
    assert histogram_distance(white, smooth) == pytest.approx(d["histogram"])


def test_rows_pair_by_nearest_angle_and_ratio_to_the_references():
    rng = np.random.default_rng(2)
    heldout = rng.normal(size=(3, 32, 32))
    style = rng.normal(size=(3, 32, 32))
    cand = {"noisy": np.stack([heldout[2], rng.normal(size=(32, 32))])}
    rows = heldout_rows(cand, [39.0, -1.0], heldout, [-40, 0, 40], style, [-41, 1, 41])
    assert [r.angle_deg for r in rows] == [-1.0, 39.0]
    r39 = rows[1]
    assert r39.distance["spectrum"] == 0.0  # paired with held-out tilt 2 (40°)
    want = tilt_distances(style[2], heldout[2])
    assert r39.reference_distance == want
    assert rows[0].ratio("histogram") == pytest.approx(
        rows[0].distance["histogram"] / rows[0].reference_distance["histogram"]
    )
    table = summarize(rows + rows)
    assert len(table) == 2 and table[0]["n_samples"] == 2
    text = format_table(table)
    assert "d(A,B)" in text and "noisy" in text and text.count("x") >= 6
