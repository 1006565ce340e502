"""Radial power spectra and histogram distances against independent formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from faket_dask.read import metrics

pytestmark = pytest.mark.timeout(30)


def _loop_spectrum(img, k):
    """A slow per-frequency loop: |DFT|^2 by direct summation, binned by radius."""
    h, w = img.shape
    img = img - img.mean()
    yy, xx = np.mgrid[0:h, 0:w]
    sums, counts = np.zeros(k), np.zeros(k)
    for u in range(h):
        for v in range(w):
            f = np.hypot(
                u / h if u < (h + 1) // 2 else u / h - 1, v / w if v < (w + 1) // 2 else v / w - 1
            )
            b = int(f // (0.5 / k))
            if b < k:
                coef = np.sum(img * np.exp(-2j * np.pi * (u * yy / h + v * xx / w)))
                sums[b] += abs(coef) ** 2 / (h * w)
                counts[b] += 1
    return sums / np.maximum(counts, 1)


def test_radial_spectrum_matches_a_direct_dft():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(11, 13))  # odd sizes: no frequency falls on a bin edge
    freq, power = metrics.radial_power_spectrum(img, n_bins=4)
    np.testing.assert_allclose(power, _loop_spectrum(img, 4), rtol=1e-9)
    np.testing.assert_allclose(freq, (np.arange(4) + 0.5) * 0.125)


def test_spectrum_peaks_at_a_sinusoids_frequency_and_white_noise_is_flat():
    _, x = np.mgrid[0:64, 0:64]
    wave = np.cos(2 * np.pi * 8 / 64 * x)  # 0.125 cycles/pixel
    freq, power = metrics.radial_power_spectrum(wave)
    assert freq[np.nanargmax(power)] == pytest.approx(0.125, abs=0.5 / 32)
    noise = np.random.default_rng(1).normal(0, 2.0, size=(40, 64, 64))
    _, p = metrics.radial_power_spectrum(noise)
    np.testing.assert_allclose(p[1:], 4.0, rtol=0.15)  # white: power = variance everywhere
    # a stack averages the spectra of its images
    _, p2 = metrics.radial_power_spectrum(noise[:2])
    _, pa = metrics.radial_power_spectrum(noise[0])
    _, pb = metrics.radial_power_spectrum(noise[1])
    np.testing.assert_allclose(p2, (pa + pb) / 2)


def test_spectrum_distance_is_in_decades():
    p = np.array([1.0, 2.0, 3.0, np.nan])
    assert metrics.spectrum_distance(p, p) == 0
    assert metrics.spectrum_distance(p, 10 * p) == pytest.approx(1.0)
    assert metrics.spectrum_distance(p, 100 * p) == pytest.approx(2.0)


def test_histogram_distance_matches_scipy_jensen_shannon():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 5000), rng.normal(0.7, 1.3, 5000)
    lo, hi = np.percentile(np.concatenate([a, b]), [0.1, 99.9])
    edges = np.linspace(lo, hi, 65)
    p = np.histogram(np.clip(a, lo, hi), edges)[0]
    q = np.histogram(np.clip(b, lo, hi), edges)[0]
    expected = jensenshannon(p / p.sum(), q / q.sum(), base=2)
    assert metrics.histogram_distance(a, b, bins=64) == pytest.approx(expected, rel=1e-9)
    assert metrics.histogram_distance(a, a) == 0
    assert metrics.histogram_distance(np.zeros(100), np.full(100, 5.0)) == pytest.approx(1.0)


def test_realism_ranks_a_closer_candidate_lower():
    rng = np.random.default_rng(3)
    ref = rng.normal(0, 1, (3, 32, 32))
    close = rng.normal(0, 1.05, (3, 32, 32))
    far = rng.normal(3, 4, (3, 32, 32))
    r_close, r_far = metrics.realism(close, ref), metrics.realism(far, ref)
    assert r_close["spectrum_distance"] < r_far["spectrum_distance"]
    assert r_close["histogram_distance"] < r_far["histogram_distance"]
    with pytest.raises(ValueError, match="tilt sizes"):
        metrics.realism(ref[:, :16], ref)
