"""The calibrated noise model: the projection through the reference microscope's CTF and noise.

Per tilt ``t`` at angle θ (``noise.model: calibrated``), with the :class:`Calibration`'s
signal power ``S(k)``, noise power ``B(k)``, mean and std interpolated linearly between the
reference tilts about θ (``log B``; the end tilts outside the reference's range)::

    signal = F⁻¹[ −sign(CTF(k)) · sqrt(S(k) / P̄(k)) · F[P_t − mean(P_t)] ]
    noise  = F⁻¹[ sqrt(B(k)) · F[ε_t] ]           ε_t: the keyed N(0, 1) stream of the tilt
    NOISY   = match_mean_std(signal + noise, mean, std)
    CONTENT = match_mean_std(signal + 0.25 · noise, mean, std)

``P̄`` is the radially averaged power of the noiseless tilt ``P_t`` itself, so the filter
gives the signal the reference's signal spectrum (``S = A·CTF²`` in the calibrated band: the
CTF's rings, envelope and MTF) while keeping the sample's own phases, and flips the contrast
where the CTF changes sign, as a microscope does. Signal and noise then stand at the
reference's SNR, ``mean S / mean B``. BASELINE uses the tilt-averaged calibration (no tilt
dependence). The noise stream is :func:`faket_dask.stages.noise.noise_field`'s, keyed by
``(seed, sample_id, tilt)``: deterministic, whichever worker draws it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from faket_dask.errors import InputError
from faket_dask.stages.calibration import Calibration
from faket_dask.stages.noise import CONTENT_FACTOR, match_mean_std, noise_field

__all__ = [
    "CALIBRATED_MODALITIES",
    "CalibratedNoiseOptions",
    "apply_calibrated_noise",
    "tilt_filters",
]

CALIBRATED_MODALITIES = ("noisy", "content", "baseline")


def _rgrid(h: int, w: int) -> np.ndarray:
    """`(H, W//2 + 1)` radii (cycles/pixel) of the ``rfft2`` grid."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fy**2 + fx**2)


def _model_at(
    cal: Calibration, angle: float | None
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """``(noise log-coefficients, signal power on cal.nu, mean, std)`` at an angle.

    ``angle=None``: the average over the reference's tilts (BASELINE).
    """
    if angle is None:
        tilts, weights = cal.tilts, np.full(len(cal.tilts), 1.0 / len(cal.tilts))
    else:
        i, j, w = cal.interpolation(angle)
        tilts, weights = (cal.tilts[i], cal.tilts[j]), np.array([1.0 - w, w])
    coef = sum(wt * np.asarray(t.noise_coef) for t, wt in zip(tilts, weights, strict=True))
    signal = sum(wt * np.asarray(t.signal_power) for t, wt in zip(tilts, weights, strict=True))
    mean = float(sum(wt * t.mean for t, wt in zip(tilts, weights, strict=True)))
    std = float(sum(wt * t.std for t, wt in zip(tilts, weights, strict=True)))
    return coef, signal, mean, std


def tilt_filters(
    cal: Calibration, angle: float | None, shape_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """The calibration's spectra on a tilt's ``rfft2`` grid.

    Returns
    -------
    signal_power
        `(H, W//2 + 1)` ``S(k)``.
    noise_power
        `(H, W//2 + 1)` ``B(k)``.
    sign
        `(H, W//2 + 1)` ``−sign(CTF(k))`` at the series' defocus.
    mean, std
        The tilt's target mean and std.
    """
    coef, signal, mean, std = _model_at(cal, angle)
    r = _rgrid(*shape_hw)
    s = np.maximum(np.interp(r, np.asarray(cal.nu), signal), 0.0)
    b = np.exp(np.polynomial.polynomial.polyval((r / 0.7) ** 2, coef))
    sign = -np.sign(cal.optics.ctf(r / cal.pixel_spacing, cal.defocus_um))
    return s, b, sign, mean, std


def _radial_mean(power: np.ndarray, r: np.ndarray, n_bins: int) -> np.ndarray:
    """``power`` replaced by its mean over radial bins of width ``1 / n_bins`` (same shape)."""
    idx = np.minimum((r * n_bins).astype(np.int64), math.ceil(0.71 * n_bins))
    sums = np.bincount(idx.ravel(), weights=power.ravel())
    counts = np.bincount(idx.ravel())
    return (sums / np.maximum(counts, 1))[idx]


def _one_tilt(
    p: torch.Tensor,
    eps: torch.Tensor,
    cal: Calibration,
    angle: float | None,
    factors: dict[str, float],
) -> dict[str, torch.Tensor]:
    """NOISY/CONTENT-like images of one tilt: ``{name: noise factor}`` → tilt."""
    h, w = p.shape
    s, b, sign, mean, std = tilt_filters(cal, angle, (h, w))
    spec = torch.fft.rfft2((p - p.mean()).to(torch.float64))
    own = _radial_mean((spec.abs() ** 2 / (h * w)).cpu().numpy(), _rgrid(h, w), min(h, w))
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(own > 0, sign * np.sqrt(s / own), 0.0)
    gain[0, 0] = 0.0
    dev = p.device
    signal = torch.fft.irfft2(spec * torch.from_numpy(gain).to(dev), s=(h, w))
    noise = torch.fft.irfft2(
        torch.fft.rfft2(eps.to(torch.float64)) * torch.from_numpy(np.sqrt(b)).to(dev), s=(h, w)
    )
    out = {}
    for name, f in factors.items():
        out[name] = match_mean_std((signal + f * noise).to(torch.float32), mean, std)
    return out


@dataclass(frozen=True)
class CalibratedNoiseOptions:
    """What :func:`apply_calibrated_noise` makes, and how.

    Attributes
    ----------
    modalities
        Among ``noisy``, ``content``, ``baseline``.
    content_factor
        CONTENT's noise amplitude relative to NOISY's (FakET: 0.25).
    tilt_offset
        Index of the first given tilt in its whole series (its keyed noise stream).
    pixel_spacing
        The tilts' Å per pixel; it must equal the calibration's (checked when given).
    """

    modalities: tuple[str, ...] = ("noisy", "content")
    content_factor: float = CONTENT_FACTOR
    tilt_offset: int = 0
    pixel_spacing: float | None = None


def apply_calibrated_noise(
    noiseless: torch.Tensor,
    calibration: Calibration,
    angles_deg: Sequence[float] | np.ndarray,
    seed: int,
    sample_id: int = 0,
    options: CalibratedNoiseOptions = CalibratedNoiseOptions(),
) -> dict[str, torch.Tensor]:
    """NOISY, CONTENT and/or BASELINE of a noiseless tilt-series by the calibrated model.

    Parameters
    ----------
    noiseless
        `(T, H, W)` projections (FakET's sign: dense = dark); outputs live on its device.
    calibration
        From :func:`faket_dask.stages.calibration.calibrate`.
    angles_deg
        `(T,)` the tilts' angles.
    seed, sample_id
        Key of the noise streams (as :func:`faket_dask.stages.noise.apply_noise`), with
        ``options.tilt_offset``.
    options
        Modalities, CONTENT's noise factor, tilt offset, pixel spacing check.

    Returns
    -------
    dict[str, torch.Tensor]
        One float32 `(T, H, W)` tensor per modality, in the requested order.
    """
    if noiseless.ndim != 3 or 0 in noiseless.shape:
        raise InputError(f"noiseless must be a (T, H, W) stack, got {tuple(noiseless.shape)}")
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    n, h, w = noiseless.shape
    if angles.size != n:
        raise InputError(f"noiseless has {n} tilts but {angles.size} angles were given")
    mods = tuple(options.modalities)
    if not mods or any(m not in CALIBRATED_MODALITIES for m in mods) or len(set(mods)) < len(mods):
        raise InputError(f"modalities must be distinct among {CALIBRATED_MODALITIES}, got {mods}")
    ps, pixel_spacing = calibration.pixel_spacing, options.pixel_spacing
    if pixel_spacing is not None and abs(pixel_spacing / ps - 1.0) > 0.01:
        raise InputError(
            f"the calibration is at {ps:g} Å/px but the tilts at {pixel_spacing:g} Å/px; "
            "calibrate the reference prepared at the dataset's pixel spacing"
        )
    out = {m: torch.empty((n, h, w), dtype=torch.float32, device=noiseless.device) for m in mods}
    factors = {"noisy": 1.0, "content": float(options.content_factor)}
    for t in range(n):
        p = noiseless[t].to(torch.float64)
        if not bool(torch.isfinite(p).all()) or float(p.std()) == 0:
            raise InputError(f"noiseless tilt {t} is constant or not finite")
        eps = noise_field((h, w), seed, sample_id, options.tilt_offset + t, noiseless.device)
        want = {m: factors[m] for m in mods if m in factors}
        if want:
            for m, x in _one_tilt(p, eps, calibration, float(angles[t]), want).items():
                out[m][t] = x
        if "baseline" in mods:
            out["baseline"][t] = _one_tilt(p, eps, calibration, None, {"b": 1.0})["b"]
    return out
