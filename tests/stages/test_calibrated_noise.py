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
    match_quantiles,
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


def test_detector_mtf_recovers_the_synth_detector(cal):
    """MTF = sqrt(B / B(0)) of the calibration vs. the analytic MTF the synth applied (ν_c 0.4).

    The calibration saw only the tilt-series; the analytic MTF is reference.detector_mtf's.
    Compared along the x axis up to 0.45 cycles/pixel (the fit band ends at 0.7 radially).
    """
    from faket_dask.stages.calibrated_noise import detector_mtf
    from faket_dask.stages.reference_synth import detector_mtf as analytic

    n = 256
    ours = detector_mtf(cal, 0.0, (n, n))[0, : int(0.45 * n)]
    truth = analytic(n, n, nu_c=0.4)[0, : int(0.45 * n)]
    assert ours[0] == 1.0
    np.testing.assert_allclose(ours, truth, rtol=0.15)
    assert ours[-1] < 0.6  # it does fall: not a flat (white) detector


def test_apply_detector_filters_by_the_mtf_and_matches_the_targets(cal):
    """White noise through apply_detector: power spectrum ∝ MTF², the targets' mean and std."""
    from faket_dask.stages.calibrated_noise import apply_detector, detector_mtf

    n = 128
    white = torch.from_numpy(np.random.default_rng(1).normal(size=(2, n, n))).float()
    out = apply_detector(white, cal, [0.0, 30.0], [10.0, -3.0], [2.0, 0.5]).double()
    np.testing.assert_allclose(out.mean(dim=(1, 2)).numpy(), [10.0, -3.0], atol=1e-4)
    np.testing.assert_allclose(out.std(dim=(1, 2), correction=0).numpy(), [2.0, 0.5], rtol=1e-5)
    for t, a in enumerate((0.0, 30.0)):
        mtf = detector_mtf(cal, a, (n, n))
        x = np.fft.rfft2(white[t].double().numpy())
        want = np.fft.irfft2(x * mtf, s=(n, n))
        want = (want - want.mean()) / want.std() * [2.0, 0.5][t] + [10.0, -3.0][t]
        np.testing.assert_allclose(out[t].numpy(), want, atol=1e-4 * [2.0, 0.5][t] * 10)


def test_step_compensation_undoes_the_sign_shrinkage_of_the_step():
    """Closed form vs. Monte Carlo: n·f − δ·sign(n) has the target std σ₀ again.

    δ = 0.15 × 0.5025 × (the init stack's range), the range taken at the compensated noise.
    """
    from faket_dask.stages.calibrated_noise import STEP, step_compensation

    rng = np.random.default_rng(2)
    sigma0 = np.array([1.0, 1.3, 1.15, 0.25])  # the last: too little noise for the step
    noise = torch.from_numpy(rng.normal(size=(4, 200, 200)) * sigma0[:, None, None])
    signal = torch.from_numpy(rng.normal(size=(4, 200, 200)) * 0.5)
    means = torch.tensor([5.0, 5.2, 5.1, 5.0], dtype=torch.float64)
    f = step_compensation(signal, noise, means)
    assert np.all(f.numpy()[:3] > 1.0)  # the step takes noise away: more goes in
    assert STEP == pytest.approx(0.15 * 0.01 / (0.01 + 0.99 * 0.01))
    x = signal + means[:, None, None] + f[:, None, None] * noise
    delta = STEP * float(x.max() - x.min())
    n = f[:, None, None] * noise
    after = (n - delta * torch.sign(n)).std(dim=(1, 2), correction=0).numpy()
    sig = noise.std(dim=(1, 2), correction=0).numpy()
    np.testing.assert_allclose(after[:3], sig[:3], rtol=0.02)
    # where δ is too large for σ₀ the least noise the model allows: σ = √(2/π) δ
    assert float(f[3]) * sig[3] == pytest.approx(np.sqrt(2 / np.pi) * delta, rel=1e-3)
    assert after[3] > sig[3]


def test_before_detector_is_the_style_init_and_content(cal):
    """noisy_pre/content_pre: same signal; their noise at 1 : 0.25; stored NOISY unchanged."""
    angles = np.array([-20.0, 10.0])
    p = _projection(2, size=64)
    plain = apply_calibrated_noise(p, cal, angles, seed=5, sample_id=2)
    out = apply_calibrated_noise(
        p, cal, angles, seed=5, sample_id=2, options=CalibratedNoiseOptions(before_detector=True)
    )
    assert list(out) == ["noisy", "content", "noisy_pre", "content_pre"]
    for m in ("noisy", "content"):
        assert torch.equal(out[m], plain[m])
    # NOISY_pre − CONTENT_pre is pure noise: white (flat spectrum), unlike NOISY − CONTENT
    d = (out["noisy_pre"] - out["content_pre"]).double().numpy()
    power = np.abs(np.fft.rfft2(d - d.mean(axis=(1, 2), keepdims=True))) ** 2
    r = np.hypot(*np.meshgrid(np.fft.fftfreq(64), np.fft.rfftfreq(64), indexing="ij"))
    low, high = power[:, (r > 0.05) & (r < 0.15)].mean(), power[:, (r > 0.35) & (r < 0.45)].mean()
    assert 0.8 < high / low < 1.25
    d2 = (out["noisy"] - out["content"]).double().numpy()
    p2 = np.abs(np.fft.rfft2(d2 - d2.mean(axis=(1, 2), keepdims=True))) ** 2
    assert p2[:, (r > 0.35) & (r < 0.45)].mean() < 0.7 * p2[:, (r > 0.05) & (r < 0.15)].mean()


def _ordinal_ranks(x: np.ndarray) -> np.ndarray:
    """0-based ranks of each image's pixels, ties in order of appearance (scipy, independent)."""
    from scipy.stats import rankdata

    return np.stack([rankdata(img.ravel(), method="ordinal") - 1 for img in x])


def test_match_quantiles_equals_an_independent_rank_map_ties_included():
    """Same size: pixel of rank k takes the target's k-th value; ties broken by pixel order."""
    rng = np.random.default_rng(7)
    x = np.round(rng.normal(size=(3, 24, 20)), 1)  # many ties
    target = rng.gamma(2.0, size=(3, 24, 20)) * np.array([1.0, 5.0, 0.1])[:, None, None]
    out = match_quantiles(torch.from_numpy(x).float(), torch.from_numpy(target)).numpy()
    assert out.dtype == np.float32 and out.shape == x.shape
    ranks = _ordinal_ranks(x.astype(np.float32))
    want = np.stack([np.sort(t.ravel())[r] for t, r in zip(target, ranks, strict=True)])
    want = want.reshape(x.shape)
    np.testing.assert_array_equal(out, want.astype(np.float32))
    # the whole histogram is the target's, tilt by tilt
    for t in range(3):
        want_t = np.sort(target[t].ravel()).astype(np.float32)
        np.testing.assert_array_equal(np.sort(out[t].ravel()), want_t)


def test_match_quantiles_of_another_size_interpolates_the_target_quantiles():
    rng = np.random.default_rng(8)
    x = rng.standard_t(3, size=(2, 30, 17))
    target = rng.lognormal(size=(2, 41, 23))
    out = match_quantiles(torch.from_numpy(x), torch.from_numpy(target)).numpy()
    n, m = 30 * 17, 41 * 23
    ranks = _ordinal_ranks(x)
    for t in range(2):
        q = np.interp((ranks[t] + 0.5) / n, (np.arange(m) + 0.5) / m, np.sort(target[t].ravel()))
        np.testing.assert_allclose(out[t].ravel(), q, rtol=1e-6)


def test_match_quantiles_is_monotone_and_deterministic():
    """It never reverses two pixels' order: the particles' contrast ordering is kept."""
    rng = np.random.default_rng(9)
    x = torch.from_numpy(np.round(rng.normal(size=(2, 32, 32)), 2)).float()
    target = torch.from_numpy(rng.normal(size=(2, 32, 32)) ** 3)
    out = match_quantiles(x, target)
    for t in range(2):
        xs, ys = x[t].ravel().numpy(), out[t].ravel().numpy()
        order = np.lexsort((np.arange(xs.size), xs))  # by value, ties by pixel index
        assert np.all(np.diff(ys[order]) >= 0)
        # a strictly brighter pixel never comes out darker
        lo, hi = xs[:, None] < xs[None, :], ys[:, None] > ys[None, :]
        assert not np.any(lo & hi)
    assert torch.equal(out, match_quantiles(x.clone(), target.clone()))
    with pytest.raises(InputError, match="one T"):
        match_quantiles(x, target[:1])
    with pytest.raises(InputError, match="non-finite"):
        match_quantiles(x, torch.full((2, 4, 4), float("nan")))
