"""The stand-in reference: Thon-ring zeros, attenuation, shot noise, determinism, provenance."""

from __future__ import annotations

import numpy as np
import pytest

from faket_dask.errors import InputError
from faket_dask.stages.ctf import ctf_zeros
from faket_dask.stages.reference_synth import (
    STAND_IN_NOTE,
    SynthOptions,
    demo_reference,
    detector_mtf,
    synth_params,
    synth_reference,
)

pytestmark = pytest.mark.timeout(120)


def _radial_profile(images: np.ndarray, step: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    n = images.shape[-1]
    win = np.outer(np.hanning(n), np.hanning(n))
    power = np.zeros((n, n))
    for im in images.astype(np.float64):
        power += np.abs(np.fft.fft2((im - im.mean()) * win)) ** 2
    k = np.fft.fftfreq(n) * n
    r = np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
    bins = np.round(r / step).astype(int).ravel()
    counts = np.bincount(bins)
    prof = np.bincount(bins, power.ravel()) / np.maximum(counts, 1)
    return np.arange(prof.size) * step, prof


@pytest.mark.parametrize(("seed", "dose"), [(1, 1e5), (2, 1e4)])
def test_synth_power_spectrum_zeros_match_the_ctf(seed: int, dose: float) -> None:
    """The Thon-ring minima of a high-dose synth of a white (carbon-like) phantom fall within
    ±2% of the CTF's predicted zeros (measured: within 0.5%)."""
    from scipy.signal import find_peaks

    n, ps, df = 256, 3.0, 2.0
    angles = np.array([-10.0, 0.0, 10.0])
    s = synth_reference(
        (3, n, n),
        angles,
        SynthOptions(
            pixel_spacing=ps,
            defocus_um=df,
            dose=dose,
            thickness_nm=30,
            seed=seed,
            phantom="carbon",
        ),
    )
    radius, prof = _radial_profile(s.data)
    predicted = ctf_zeros(3, df) * n * ps  # in frequency-index units: 38.3, 54.5, 66.9
    ok = (radius > 4) & (radius < n / 2 - 2)
    logp, rad = np.log(prof[ok]), radius[ok]
    minima, _ = find_peaks(-logp, prominence=1.0)  # dips deeper than a factor e
    found = []
    for i in minima[:3]:
        y0, y1, y2 = logp[i - 1 : i + 2]  # parabolic refinement, bins of 0.5
        found.append(rad[i] + 0.25 * (y0 - y2) / (y0 - 2 * y1 + y2))
    assert len(found) == 3, (rad[minima], predicted)
    rel = np.array(found) / predicted - 1
    assert np.all(np.abs(rel) < 0.02), (found, predicted)


def test_synth_attenuation_and_shot_noise() -> None:
    n, angles = 64, np.array([-60.0, 0.0, 60.0])
    kw = {"pixel_spacing": 10.0, "thickness_nm": 100.0, "seed": 4}
    high = synth_reference((3, n, n), angles, SynthOptions(dose=1e7, **kw)).data.astype(np.float64)
    low = synth_reference((3, n, n), angles, SynthOptions(dose=30.0, **kw)).data.astype(np.float64)
    # Mean intensity drops as exp(−t / (λ cos θ)) (λ = 350 nm at 300 kV).
    means = high.mean(axis=(1, 2))
    expect = np.exp(-100.0 / (350.0 * np.cos(np.deg2rad(angles))))
    np.testing.assert_allclose(means / means[1], expect / expect[1], rtol=0.01)
    # Same seed, same phantom: the low-dose residual is Poisson noise through the MTF.
    resid = low / low.mean(axis=(1, 2), keepdims=True) - high / means.reshape(-1, 1, 1)
    mtf2 = float(np.mean(detector_mtf(n, n) ** 2))
    electrons = 30.0 / 3 * 10.0**2 * expect  # per pixel per tilt, after attenuation
    np.testing.assert_allclose(resid.var(axis=(1, 2)), mtf2 / electrons, rtol=0.15)


def test_synth_is_deterministic_and_documented() -> None:
    angles = np.arange(-30.0, 31.0, 15.0)
    a = demo_reference((32, 48), angles, 10.0, seed=2)
    b = demo_reference((5, 32, 48), angles, 10.0, seed=2)
    c = demo_reference((32, 48), angles, 10.0, seed=3)
    assert a.data.shape == (5, 32, 48) and a.data.dtype == np.float32
    assert np.array_equal(a.data, b.data) and not np.array_equal(a.data, c.data)
    assert a.pixel_spacing == 10.0
    np.testing.assert_array_equal(a.angles_deg, angles)
    assert np.all(np.isfinite(a.data))
    rec = synth_params((5, 32, 48), angles, seed=2).to_dict()
    assert rec["stand_in"] is True and rec["note"] == STAND_IN_NOTE
    assert "stand-in" in (synth_reference.__doc__ or "")
    with pytest.raises(InputError):
        synth_reference((4, 32, 32), angles)
