"""stages/calibrated_noise.py: the reference's spectra and SNR on a projection, deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _microscopes import ANGLES, synth

from faket_dask.errors import InputError
from faket_dask.stages.calibrated_noise import (
    CalibratedNoiseOptions,
    apply_calibrated_noise,
    tilt_filters,
)
from faket_dask.stages.calibration import calibrate
from faket_dask.stages.ctf import tilt_power_spectrum


@pytest.fixture(scope="module")
def cal():
    series, _ = synth("df3", seed=3)
    return calibrate(series.data, ANGLES, series.pixel_spacing)


def _projection(n_tilts: int, size: int = 256, seed: int = 0) -> torch.Tensor:
    """A stand-in noiseless projection: smooth blobs (a different spectrum from the reference)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_tilts, size, size))
    f = np.fft.fftfreq(size)
    r2 = f[:, None] ** 2 + f[None, :] ** 2
    x = np.fft.ifft2(np.fft.fft2(x) * np.exp(-r2 / (2 * 0.03**2))).real
    return torch.from_numpy(-np.abs(x)).float()


def test_noisy_has_the_reference_spectrum_mean_std_and_snr(cal):
    angles = np.array([-50.0, 0.0, 40.0])
    out = apply_calibrated_noise(_projection(3), cal, angles, seed=5, sample_id=2)
    assert list(out) == ["noisy", "content"]
    for t, a in enumerate(angles):
        i = int(np.flatnonzero(cal.angles_deg == a)[0])
        ref = cal.tilts[i]
        noisy = out["noisy"][t].numpy().astype(np.float64)
        assert noisy.mean() == pytest.approx(ref.mean, rel=1e-4)
        assert noisy.std() == pytest.approx(ref.std, rel=1e-4)
        # the measured spectrum of NOISY vs the calibration's S + B (independent estimator)
        freq, power, _ = tilt_power_spectrum(noisy)
        s, b, _, _, _ = tilt_filters(cal, float(a), (256, 256))
        want = np.interp(freq, cal.nu, np.asarray(ref.signal_power)) + ref.noise_power(freq)
        band = (freq > 0.05) & (freq < 0.65)
        rms = np.sqrt(np.mean(np.log10(power[band] / want[band]) ** 2))
        assert rms < 0.08, rms
        # SNR: the re-scaled signal over noise stands at the calibration's
        assert s.mean() / b.mean() == pytest.approx(ref.snr, rel=0.15)
    # CONTENT: the same signal with a quarter of the noise, so it correlates with NOISY
    c, n = out["content"].numpy(), out["noisy"].numpy()
    assert np.corrcoef(c.ravel(), n.ravel())[0, 1] > 0.7


def test_keyed_streams_are_deterministic(cal):
    p = _projection(2)
    a = apply_calibrated_noise(p, cal, [0.0, 10.0], seed=1, sample_id=0)
    b = apply_calibrated_noise(p, cal, [0.0, 10.0], seed=1, sample_id=0)
    c = apply_calibrated_noise(p, cal, [0.0, 10.0], seed=1, sample_id=1)
    assert torch.equal(a["noisy"], b["noisy"]) and torch.equal(a["content"], b["content"])
    assert not torch.equal(a["noisy"], c["noisy"])
    # a block of tilts (tilt_offset) draws the same streams as the whole series
    tail = apply_calibrated_noise(
        p[1:], cal, [10.0], seed=1, sample_id=0, options=CalibratedNoiseOptions(tilt_offset=1)
    )
    assert torch.equal(tail["noisy"][0], a["noisy"][1])


def test_between_reference_angles_interpolates_and_baseline_is_tilt_independent(cal):
    s0, _, _, m0, sd0 = tilt_filters(cal, 0.0, (64, 64))
    s1, _, _, m1, sd1 = tilt_filters(cal, 10.0, (64, 64))
    s_mid, _, _, m_mid, sd_mid = tilt_filters(cal, 5.0, (64, 64))
    assert m_mid == pytest.approx((m0 + m1) / 2) and sd_mid == pytest.approx((sd0 + sd1) / 2)
    np.testing.assert_allclose(s_mid, (s0 + s1) / 2)
    base = CalibratedNoiseOptions(modalities=("baseline",))
    out = apply_calibrated_noise(_projection(2, 64), cal, [-50.0, 50.0], 0, options=base)
    means = out["baseline"].double().mean(dim=(1, 2)).numpy()
    assert means[0] == pytest.approx(means[1], rel=1e-5)
    assert means[0] == pytest.approx(np.mean([t.mean for t in cal.tilts]), rel=1e-5)


def test_bad_input(cal):
    p = _projection(1, 64)
    with pytest.raises(InputError, match="Å/px"):
        opts = CalibratedNoiseOptions(pixel_spacing=cal.pixel_spacing * 2)
        apply_calibrated_noise(p, cal, [0.0], 0, options=opts)
    with pytest.raises(InputError, match="angles"):
        apply_calibrated_noise(p, cal, [0.0, 1.0], 0)
    with pytest.raises(InputError, match="modalities"):
        apply_calibrated_noise(p, cal, [0.0], 0, options=CalibratedNoiseOptions(("styled",)))
    with pytest.raises(InputError, match="constant"):
        apply_calibrated_noise(torch.zeros(1, 64, 64), cal, [0.0], 0)
