"""The CTF, the power spectrum of a tilt, and defocus and noise from its Thon rings.

A tilt of a weak-phase specimen recorded with shot noise has the radially averaged power
spectrum (``|FFT|² / Σw²`` of the tapered image, so that white noise of variance σ² has power
σ² at every frequency)::

    P(k) = B(k) + A(k) · CTF²(k; Δf)

with ``B`` the noise (shot noise through the detector's MTF: smooth), ``A`` the signal's
envelope (the specimen's spectrum times the coherence envelope and MTF²: smooth) and the CTF's
rings, which depend on the defocus ``Δf`` (the voltage, Cs and amplitude contrast are given:
:class:`Optics`). :func:`fit_defocus` finds Δf from the rings in the log spectrum (a linear
fit per Δf on a fine grid); :func:`fit_spectrum` then splits ``P`` into ``B`` and ``A`` at that
Δf. At the zeros of the CTF the spectrum is the noise alone and the rings' depth gives the
signal: that is what separates signal from noise without a clean image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import least_squares, minimize_scalar

__all__ = [
    "Optics",
    "SpectrumFit",
    "bin_average_ctf2",
    "ctf",
    "ctf_zeros",
    "electron_wavelength",
    "fit_defocus",
    "fit_spectrum",
    "interaction_constant",
    "radial_grid",
    "tilt_power_spectrum",
]

_SUBSAMPLES = 8
"""Radii per bin at which CTF² is averaged (rings narrower than a bin average out)."""


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å: ``h / sqrt(2 m e V (1 + e V / (2 m c²)))``."""
    v = voltage_kv * 1e3
    return 12.264259 / math.sqrt(v * (1.0 + 0.97847574e-6 * v))


def interaction_constant(voltage_kv: float) -> float:
    """σ_e in rad/(V·Å): ``(2π / (λ V)) · (m c² + e V) / (2 m c² + e V)``."""
    v = voltage_kv * 1e3
    mc2 = 510998.95
    return 2 * math.pi / (electron_wavelength(voltage_kv) * v) * (mc2 + v) / (2 * mc2 + v)


def ctf(
    k: np.ndarray | torch.Tensor,
    defocus_um: float,
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
) -> np.ndarray | torch.Tensor:
    """Phase-contrast CTF at spatial frequency ``k`` (1/Å).

    ``CTF = −(√(1 − A²)·sin χ + A·cos χ) = −sin(χ + asin A)`` with
    ``χ = π λ Δf k² − (π/2) Cs λ³ k⁴``, ``Δf > 0`` underfocus (Å), ``Cs`` in Å. Negative at low
    frequency: dense matter is dark.
    """
    lam = electron_wavelength(voltage_kv)
    df = defocus_um * 1e4
    cs = cs_mm * 1e7
    lib = torch if isinstance(k, torch.Tensor) else np
    k2 = k * k
    chi = math.pi * lam * df * k2 - 0.5 * math.pi * cs * lam**3 * k2 * k2
    out: np.ndarray | torch.Tensor = -lib.sin(chi + math.asin(amplitude_contrast))
    return out


def ctf_zeros(
    n: int,
    defocus_um: float,
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
) -> np.ndarray:
    """The first ``n`` zeros of :func:`ctf` in 1/Å: ``χ(k) + asin A = jπ``, ``j = 1..n``."""
    lam = electron_wavelength(voltage_kv)
    a = 0.5 * math.pi * cs_mm * 1e7 * lam**3
    b = math.pi * lam * defocus_um * 1e4
    out = []
    for j in range(1, n + 1):
        c = j * math.pi - math.asin(amplitude_contrast)
        # a q² − b q + c = 0 with q = k²: the smaller root (the defocus-dominated branch).
        q = c / b if a == 0 else (b - math.sqrt(b * b - 4 * a * c)) / (2 * a)
        out.append(math.sqrt(q))
    return np.array(out)


def radial_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``fft2`` grid's radii and the radial bin edges, in cycles/pixel.

    Returns
    -------
    radius
        `(H, W)` ``|ν|`` of each ``fft2`` frequency.
    edges
        `(K + 1,)` bin edges of width ``1 / min(H, W)`` from 0 out to the corner ``√½``.
    """
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    step = 1.0 / min(height, width)
    k = math.ceil(math.sqrt(0.5) / step)
    return radius, np.arange(k + 1) * step


def _taper(n: int, fraction: float) -> np.ndarray:
    """A 1-D Tukey window: cosine ramps over ``fraction`` of the length at each end."""
    w = np.ones(n)
    m = max(1, round(fraction * n))
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(m) + 0.5) / m)
    w[:m] = ramp
    w[n - m :] = ramp[::-1]
    return w


def tilt_power_spectrum(
    image: np.ndarray, taper: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of one tilt, normalised so that white noise is flat.

    Parameters
    ----------
    image
        `(H, W)` tilt; its mean is removed, then the edges are tapered (Tukey, ``taper`` of
        each side) so that the FFT sees no edge discontinuity.
    taper
        Fraction of each side in the window's cosine ramp.

    Returns
    -------
    freq
        `(K,)` bin centres in cycles/pixel, out to the corner (``√½``).
    power
        `(K,)` mean ``|FFT(w·x)|² / Σw²`` per bin: a white image of variance σ² gives σ².
    counts
        `(K,)` frequencies per bin.
    """
    x = np.asarray(image, dtype=np.float64)
    h, w = x.shape
    win = np.outer(_taper(h, taper), _taper(w, taper))
    x = (x - x.mean()) * win
    power = np.abs(np.fft.fft2(x)) ** 2 / np.sum(win**2)
    radius, edges = radial_grid(h, w)
    idx = np.minimum(np.digitize(radius.ravel(), edges) - 1, edges.size - 2)
    k = edges.size - 1
    sums = np.bincount(idx, weights=power.ravel(), minlength=k)
    counts = np.bincount(idx, minlength=k)
    mean = sums / np.maximum(counts, 1)
    return 0.5 * (edges[:-1] + edges[1:]), mean, counts


def bin_average_ctf2(
    edges_per_a: np.ndarray,
    defocus_um: float,
    voltage_kv: float,
    cs_mm: float,
    amplitude_contrast: float,
) -> np.ndarray:
    """CTF² averaged over each radial bin (weight ∝ radius), bins given in 1/Å.

    Parameters
    ----------
    edges_per_a
        `(K + 1,)` bin edges in 1/Å.

    Returns
    -------
    np.ndarray
        `(K,)` mean CTF² per bin, evaluated at ``_SUBSAMPLES`` radii across it.
    """
    lo, hi = edges_per_a[:-1, None], edges_per_a[1:, None]
    frac = (np.arange(_SUBSAMPLES) + 0.5) / _SUBSAMPLES
    k = lo + (hi - lo) * frac[None, :]
    c2 = np.asarray(ctf(k, defocus_um, voltage_kv, cs_mm, amplitude_contrast)) ** 2
    out: np.ndarray = np.sum(c2 * k, axis=1) / np.sum(k, axis=1)
    return out


@dataclass(frozen=True)
class Optics:
    """The CTF's parameters that are given, not fitted (defaults: a 300 kV, Cs 2.7 mm scope).

    Attributes
    ----------
    voltage_kv
        Acceleration voltage in kV.
    cs_mm
        Spherical aberration in mm.
    amplitude_contrast
        Amplitude contrast fraction A in [0, 1).
    """

    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07

    def ctf(self, k: np.ndarray, defocus_um: float) -> np.ndarray:
        """The CTF at frequencies ``k`` (1/Å, any shape) for underfocus ``defocus_um`` (µm)."""
        k = np.asarray(k, dtype=np.float64)
        return np.asarray(
            ctf(k, defocus_um, self.voltage_kv, self.cs_mm, self.amplitude_contrast)
        )

    def ctf2_bins(self, edges_per_a: np.ndarray, defocus_um: float) -> np.ndarray:
        """:func:`bin_average_ctf2` with these optics."""
        return bin_average_ctf2(
            edges_per_a, defocus_um, self.voltage_kv, self.cs_mm, self.amplitude_contrast
        )

    def n_zeros(self, k_lo: float, k_hi: float, defocus_um: float) -> int:
        """CTF zeros between ``k_lo`` and ``k_hi`` (1/Å)."""
        lam = electron_wavelength(self.voltage_kv)
        df, cs = defocus_um * 1e4, self.cs_mm * 1e7
        phase = math.asin(self.amplitude_contrast)

        def turns(k: float) -> int:
            chi = math.pi * lam * df * k * k - 0.5 * math.pi * cs * lam**3 * k**4
            return math.floor((chi + phase) / math.pi)

        return max(turns(k_hi) - turns(k_lo), 0)


@dataclass(frozen=True)
class _Band:
    """One spectrum restricted to the fitted band."""

    nu: np.ndarray  # (K,) cycles/pixel
    edges: np.ndarray  # (K + 1,) 1/Å
    log_power: np.ndarray  # (K,)
    weight: np.ndarray  # (K,) sqrt(frequencies per bin)
    u: np.ndarray  # (K,) the band mapped onto [-1, 1]
    nu_range: tuple[float, float]


def _band(
    freq: np.ndarray,
    power: np.ndarray,
    counts: np.ndarray,
    pixel_spacing: float,
    nu_range: tuple[float, float],
) -> _Band:
    freq = np.asarray(freq, dtype=np.float64)
    power = np.asarray(power, dtype=np.float64)
    step = float(freq[1] - freq[0])
    keep = (freq >= nu_range[0]) & (freq <= nu_range[1]) & (counts > 0) & (power > 0)
    if keep.sum() < 12:
        raise ValueError(f"only {int(keep.sum())} spectrum bins in the band {nu_range}")
    f = freq[keep]
    edges = np.concatenate([f - step / 2, f[-1:] + step / 2]) / pixel_spacing
    lo, hi = float(f[0]), float(f[-1])
    return _Band(
        nu=f,
        edges=edges,
        log_power=np.log(power[keep]),
        weight=np.sqrt(np.asarray(counts, dtype=np.float64)[keep]),
        u=(f - lo) / (hi - lo) * 2.0 - 1.0,
        nu_range=(lo, hi),
    )


def _wlstsq(design: np.ndarray, band: _Band) -> tuple[np.ndarray, float]:
    wd = design * band.weight[:, None]
    wy = band.log_power * band.weight
    coef, *_ = np.linalg.lstsq(wd, wy, rcond=None)
    return coef, float(np.sum((wd @ coef - wy) ** 2))


def fit_defocus(
    freq: np.ndarray,
    power: np.ndarray,
    counts: np.ndarray,
    pixel_spacing: float,
    optics: Optics = Optics(),
    defocus_range_um: tuple[float, float] = (0.5, 12.0),
    nu_range: tuple[float, float] = (0.15, 0.7),
    degree: int = 4,
) -> tuple[float, float]:
    """Underfocus from the Thon rings of a radially averaged power spectrum.

    In the log domain the spectrum is a smooth background plus the rings:
    ``log P ≈ poly(ν) + (γ₀ + γ₁ u) · CTF²(ν; Δf)`` (``log(B + A·CTF²) ≈ log B + (A/B)·CTF²``),
    linear in the polynomial (Chebyshev, ``degree``) and γ for a given Δf. Δf is searched on
    a logarithmic grid of 0.25 % steps and refined; a Δf whose ring term is not positive over
    the band scores as no rings at all.

    Parameters
    ----------
    freq, power, counts
        `(K,)` from :func:`tilt_power_spectrum` (or a mean of them over tilts).
    pixel_spacing
        Å per pixel.
    optics
        Voltage, Cs and amplitude contrast.
    defocus_range_um
        Underfocus search range in µm.
    nu_range
        The fitted band in cycles/pixel.
    degree
        Degree of the smooth background.

    Returns
    -------
    defocus_um
        The fitted underfocus in µm.
    ring_score
        Fraction of the band's residual (after the smooth background) that the rings explain,
        in [0, 1]: about 0 when no rings are seen.
    """
    band = _band(freq, power, counts, pixel_spacing, nu_range)
    basis = np.polynomial.chebyshev.chebvander(band.u, degree)
    _, base = _wlstsq(basis, band)

    def ssr(df: float) -> float:
        c2 = optics.ctf2_bins(band.edges, df)
        coef, s = _wlstsq(np.concatenate([basis, c2[:, None], (c2 * band.u)[:, None]], 1), band)
        return s if coef[-2] > 0 else base

    lo, hi = (math.log(v) for v in defocus_range_um)
    grid = np.exp(np.arange(lo, hi, 0.0025))
    scores = np.array([ssr(float(df)) for df in grid])
    i = int(np.argmin(scores))
    a, b = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, grid.size - 1)])
    best = minimize_scalar(ssr, bounds=(a, b), method="bounded", options={"xatol": 1e-5})
    if best.fun <= scores[i]:
        df, s = float(best.x), float(best.fun)
    else:
        df, s = float(grid[i]), float(scores[i])
    return df, max(0.0, 1.0 - s / base) if base > 0 else 0.0


_B_TERMS = 5
"""Terms of the noise model: ``log B = Σ b_j x^j`` with ``x = (ν / 0.7)²`` (even in ν)."""


@dataclass(frozen=True)
class SpectrumFit:
    """``P(ν) = B(ν) + A(ν) · CTF²(ν; Δf)`` fitted to one radially averaged spectrum.

    Attributes
    ----------
    defocus_um
        The underfocus (µm) of the CTF used.
    noise_coef
        ``log B = Σ_j b_j x^j``, ``x = (ν / 0.7)²`` (ν in cycles/pixel): smooth, even, flat at
        ν = 0, as the shot noise through a detector's MTF.
    signal_coef
        ``log A`` as Chebyshev coefficients over ``nu_range`` mapped onto [-1, 1] (held
        constant outside the band).
    nu_range
        The fitted band in cycles/pixel.
    relative_rms
        RMS of ``log P − log model`` over the band (about the relative error of the fit).
    """

    defocus_um: float
    noise_coef: tuple[float, ...]
    signal_coef: tuple[float, ...]
    nu_range: tuple[float, float]
    relative_rms: float

    def noise_power(self, nu: np.ndarray) -> np.ndarray:
        """``B`` at ``nu`` cycles/pixel (any shape)."""
        x = (np.asarray(nu, dtype=np.float64) / 0.7) ** 2
        return np.exp(np.polynomial.polynomial.polyval(x, self.noise_coef))

    def signal_envelope(self, nu: np.ndarray) -> np.ndarray:
        """``A`` at ``nu`` cycles/pixel (any shape)."""
        lo, hi = self.nu_range
        u = np.clip((np.asarray(nu, dtype=np.float64) - lo) / (hi - lo) * 2.0 - 1.0, -1, 1)
        return np.exp(np.polynomial.chebyshev.chebval(u, self.signal_coef))


def fit_spectrum(
    freq: np.ndarray,
    power: np.ndarray,
    counts: np.ndarray,
    pixel_spacing: float,
    defocus_um: float,
    optics: Optics = Optics(),
    nu_range: tuple[float, float] = (0.15, 0.7),
    degree: int = 3,
) -> SpectrumFit:
    """Split a spectrum into noise ``B`` and ring-modulated signal ``A · CTF²`` at a known Δf.

    Nonlinear least squares on ``log P − log(B + A · CTF²)`` over the band, weighted by the
    square root of the frequencies per bin. At the CTF's zeros the spectrum is the noise alone,
    between them the rings' depth gives the signal, so ``B`` and ``A`` separate without a
    clean image. ``B`` is even and smooth in ν (:data:`_B_TERMS` terms), so it extends to
    ν = 0 below the band; ``A`` is a Chebyshev polynomial of ``degree`` in the band.

    Parameters
    ----------
    freq, power, counts
        `(K,)` from :func:`tilt_power_spectrum`.
    pixel_spacing
        Å per pixel.
    defocus_um
        Underfocus in µm (from :func:`fit_defocus`).
    optics
        Voltage, Cs and amplitude contrast.
    nu_range
        The fitted band in cycles/pixel.
    degree
        Degree of ``log A``.
    """
    band = _band(freq, power, counts, pixel_spacing, nu_range)
    c2 = optics.ctf2_bins(band.edges, defocus_um)
    xb = np.polynomial.polynomial.polyvander((band.nu / 0.7) ** 2, _B_TERMS - 1)
    xa = np.polynomial.chebyshev.chebvander(band.u, degree)
    nb = xb.shape[1]

    def model(p: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.logaddexp(xb @ p[:nb], xa @ p[nb:] + np.log(np.maximum(c2, 1e-12)))
        return out

    def residual(p: np.ndarray) -> np.ndarray:
        out: np.ndarray = band.weight * (band.log_power - model(p))
        return out

    # Start: noise just under the spectrum, signal as strong as the noise.
    b0, _ = _wlstsq(xb, band)
    a0, _ = _wlstsq(xa, band)
    p0 = np.concatenate([b0 - math.log(2.0), a0 - math.log(2.0)])
    res = least_squares(residual, p0, method="lm", max_nfev=4000)
    p = res.x
    rms = float(np.sqrt(np.mean((band.log_power - model(p)) ** 2)))
    return SpectrumFit(
        defocus_um=float(defocus_um),
        noise_coef=tuple(float(v) for v in p[:nb]),
        signal_coef=tuple(float(v) for v in p[nb:]),
        nu_range=band.nu_range,
        relative_rms=rms,
    )
