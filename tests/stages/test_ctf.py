"""stages/ctf.py: the tilt spectrum's normalisation, Thon-ring defocus and the noise split."""

from __future__ import annotations

import numpy as np
import pytest

from faket_dask.stages.ctf import (
    Optics,
    ctf,
    ctf_zeros,
    electron_wavelength,
    fit_defocus,
    fit_spectrum,
    radial_grid,
    tilt_power_spectrum,
)
from faket_dask.stages.reference_synth import SynthOptions, synth_reference


def _image_with_spectrum(n, ps, df, noise, envelope, seed):
    """White noise filtered in 2-D so that its power is noise(ν) + envelope(ν)·CTF²(k)."""
    rng = np.random.default_rng(seed)
    r, _ = radial_grid(n, n)
    c = ctf(r / ps, df)
    sig = np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * np.sqrt(envelope(r)) * c).real
    bg = np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * np.sqrt(noise(r))).real
    return sig + bg


def test_white_noise_has_flat_power_equal_to_its_variance():
    x = np.random.default_rng(0).normal(0.0, 3.0, size=(256, 320))
    freq, power, counts = tilt_power_spectrum(x)
    assert freq[0] > 0 and freq[-1] == pytest.approx(np.sqrt(0.5), abs=1 / 256)
    band = (freq > 0.05) & (freq < 0.6)
    assert np.mean(power[band]) == pytest.approx(9.0, rel=0.02)
    assert np.all(np.abs(power[band] / 9.0 - 1) < 0.35)
    assert counts.sum() == 256 * 320


@pytest.mark.parametrize(("df", "ps"), [(1.8, 4.0), (4.2, 7.0)])
def test_defocus_and_noise_of_a_known_spectrum(df, ps):
    """Rings + coloured noise with known closed forms; the fit recovers Δf and B."""
    noise = lambda nu: 2.0 / (1.0 + (nu / 0.35) ** 2) ** 2  # noqa: E731
    envelope = lambda nu: 6.0 * np.exp(-6.0 * nu)  # noqa: E731
    spectra = [
        tilt_power_spectrum(_image_with_spectrum(256, ps, df, noise, envelope, s)) for s in range(4)
    ]
    freq, _, counts = spectra[0]
    mean = np.mean([p for _, p, _ in spectra], axis=0)
    got, score = fit_defocus(freq, mean, counts, ps)
    assert got == pytest.approx(df, rel=0.01)
    assert score > 0.5
    fit = fit_spectrum(freq, mean, counts, ps, got)
    band = (freq > 0.15) & (freq < 0.65)
    got_b, want_b = fit.noise_power(freq[band]), noise(freq[band])
    np.testing.assert_allclose(got_b, want_b, rtol=0.15)
    assert np.sum(got_b * freq[band]) / np.sum(want_b * freq[band]) == pytest.approx(1, abs=0.05)
    assert fit.relative_rms < 0.1


def test_no_rings_scores_about_zero():
    x = np.random.default_rng(1).normal(size=(256, 256))
    freq, power, counts = tilt_power_spectrum(x)
    _, score = fit_defocus(freq, power, counts, 5.0)
    assert score < 0.1


def test_carbon_thon_rings_give_the_synth_defocus():
    """The CTF-check phantom (flat spectrum): the zeros sit where reference.ctf_zeros says."""
    ang = np.array([0.0])
    opts = SynthOptions(pixel_spacing=5.0, defocus_um=2.5, phantom="carbon")
    s = synth_reference((1, 256, 256), ang, opts)
    freq, power, counts = tilt_power_spectrum(s.data[0])
    df, _ = fit_defocus(freq, power, counts, 5.0)
    assert df == pytest.approx(2.5, rel=0.02)
    o = Optics()
    k1, k3 = ctf_zeros(3, 2.5)[[0, 2]]
    assert o.n_zeros(k1 * 0.99, k3 * 1.01, 2.5) == 3
    np.testing.assert_allclose(o.ctf(np.array([k1]), 2.5), 0.0, atol=1e-9)


def test_electron_wavelength_and_ctf_zeros() -> None:
    assert electron_wavelength(300) == pytest.approx(0.019687, rel=1e-4)
    assert electron_wavelength(200) == pytest.approx(0.025079, rel=1e-4)
    z = ctf_zeros(3, 2.5, 300, 2.7, 0.07)
    np.testing.assert_allclose(ctf(z, 2.5, 300, 2.7, 0.07), 0.0, atol=1e-9)
    assert np.all(np.diff(z) > 0)
    assert ctf(np.array([1e-4]), 2.5)[0] < 0  # dense is dark at low frequency
