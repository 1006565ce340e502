"""The calibrated noise model: the projection through the reference microscope's CTF and noise.

Per tilt ``t`` at angle θ (``noise.model: calibrated``), with the :class:`Calibration`'s
signal power ``S(k)``, noise power ``B(k)``, mean and std interpolated linearly between the
reference tilts about θ (``log B``; the end tilts outside the reference's range). The optics
(CTF, envelope) act before the noise, the detector last: its MTF is read off the noise
spectrum, ``MTF = sqrt(B / B(0))`` (shot noise is white before the detector)::

    signal_pre = F⁻¹[ −sign(CTF(k)) · sqrt(S(k) / P̄(k)) / MTF(k) · F[P_t − mean(P_t)] ]
    noise_pre  = sqrt(B(0)) · ε_t                  ε_t: the keyed N(0, 1) stream of the tilt
    NOISY   = match_mean_std(F⁻¹[MTF · F[signal_pre + noise_pre]], mean, std)
    CONTENT = match_mean_std(F⁻¹[MTF · F[signal_pre + 0.25 · noise_pre]], mean, std)

``P̄`` is the radially averaged power of the noiseless tilt ``P_t`` itself, so the filter
gives the signal the reference's signal spectrum (``S = A·CTF²`` in the calibrated band: the
CTF's rings, envelope and MTF) while keeping the sample's own phases, and flips the contrast
where the CTF changes sign, as a microscope does. Signal and noise then stand at the
reference's SNR, ``mean S / mean B``. BASELINE uses the tilt-averaged calibration (no tilt
dependence). The noise stream is :func:`faket_dask.stages.noise_apply.noise_field`'s, keyed by
``(seed, sample_id, tilt)``: deterministic, whichever worker draws it.

FakET's style step (unchanged) runs before the detector, on ``noisy_pre``/``content_pre``
(``CalibratedNoiseOptions.before_detector``), whose white noise is raised by
:func:`step_compensation` for what the step's sign-like move takes away; its output then goes
through :func:`apply_detector`, and (``noise.intensity_match: quantiles``, the default) takes
the style tilt's whole histogram by :func:`match_quantiles` (a monotone map: ranks kept).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from faket_dask.errors import InputError
from faket_dask.stages._stats import match_mean_std, match_quantiles
from faket_dask.stages.calibration import CALIBRATION_FORMAT, Calibration
from faket_dask.stages.noise import CONTENT_FACTOR, NoiseModel
from faket_dask.stages.noise_apply import noise_field
from faket_dask.stages.style.losses import STEP_SIZE, ema_weights

__all__ = [
    "CALIBRATED_MODALITIES",
    "MTF_FLOOR",
    "CalibratedNoiseOptions",
    "apply_calibrated_noise",
    "apply_detector",
    "detector_mtf",
    "load_noise_model",
    "match_quantiles",
    "step_compensation",
    "tilt_filters",
]

CALIBRATED_MODALITIES = ("noisy", "content", "baseline")


def load_noise_model(path: str | Path) -> NoiseModel | Calibration:
    """FakET's ``noise.json`` (:class:`NoiseModel`), or a calibration (the calibrated model).

    A JSON file whose ``format`` is :data:`CALIBRATION_FORMAT` (``reference calibrate``'s
    ``micro.json``) is a :class:`Calibration`; anything else is read as a noise model (whose
    loader names what is wrong with it).
    """
    p = Path(path)
    if p.is_file():
        try:
            fmt = json.loads(p.read_text(encoding="utf-8")).get("format")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            fmt = None
        if fmt == CALIBRATION_FORMAT:
            return Calibration.load(p)
    return NoiseModel.load(p)


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


MTF_FLOOR = 0.05
"""Lowest detector MTF used (keeps the pre-detector signal ``S / MTF²`` bounded)."""


def detector_mtf(cal: Calibration, angle: float | None, shape_hw: tuple[int, int]) -> np.ndarray:
    """The detector's MTF measured from the reference's noise spectrum, on the ``rfft2`` grid.

    Shot noise is white before the detector, so the noise power spectrum the calibration
    measured is ``B(ν) = B(0)·MTF²(ν)``: ``MTF = sqrt(B / B(0))``, i.e. the noise model without
    its constant term, floored at :data:`MTF_FLOOR`. `(H, W//2 + 1)`, 1 at ν = 0.
    """
    coef, _, _, _ = _model_at(cal, angle)
    r = _rgrid(*shape_hw)
    shape = np.polynomial.polynomial.polyval((r / 0.7) ** 2, np.r_[0.0, coef[1:]])
    mtf: np.ndarray = np.maximum(np.exp(0.5 * shape), MTF_FLOOR)
    return mtf


def _one_tilt(
    p: torch.Tensor,
    eps: torch.Tensor,
    cal: Calibration,
    angle: float | None,
    factors: dict[str, float],
) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """NOISY/CONTENT-like images of one tilt: ``{name: noise factor}`` → three images.

    ``(after, signal, noise)``: ``after`` is the image through the detector (spectra ``S`` and
    ``B``) matched to the tilt's mean and std; ``signal`` (spectrum ``S / MTF²``) and
    ``noise`` (white, power ``B(0)`` times the factor) are the parts before the detector,
    scaled by the same gain, so that ``mean + MTF ⊛ (signal + noise) = after``.
    """
    h, w = p.shape
    s, b, sign, mean, std = tilt_filters(cal, angle, (h, w))
    mtf = detector_mtf(cal, angle, (h, w))
    spec = torch.fft.rfft2((p - p.mean()).to(torch.float64))
    own = _radial_mean((spec.abs() ** 2 / (h * w)).cpu().numpy(), _rgrid(h, w), min(h, w))
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(own > 0, sign * np.sqrt(s / own), 0.0) / mtf
    gain[0, 0] = 0.0
    dev = p.device
    signal = torch.fft.irfft2(spec * torch.from_numpy(gain).to(dev), s=(h, w))
    noise = eps.to(torch.float64) * math.sqrt(float(b[0, 0]))
    mtf_t = torch.from_numpy(mtf).to(dev)
    out = {}
    for name, f in factors.items():
        after = torch.fft.irfft2(torch.fft.rfft2(signal + f * noise) * mtf_t, s=(h, w))
        g = std / float(after.std(correction=0))
        pre = ((signal * g).to(torch.float32), (noise * (f * g)).to(torch.float32))
        out[name] = (match_mean_std(after.to(torch.float32), mean, std), *pre)
    return out


STEP = STEP_SIZE * ema_weights()[1]
"""FakET's style step in [0, 1] units: Adam's first step (``lr``, sign-like) times the EMA's
weight on the stepped image, ``0.15 × 0.5025 = 0.0754``."""


def step_compensation(
    signal: torch.Tensor, noise: torch.Tensor, means: torch.Tensor, n_iter: int = 6
) -> torch.Tensor:
    """`(T,)` factors on the white noise of the style init that FakET's step takes away.

    FakET normalises the init stack by its range ``R`` (min–max over all tilts) and moves
    every pixel by ``δ = STEP · R`` against the sign of the loss gradient, which for a noisy
    init follows the sign of its noise. On white Gaussian noise of std ``σ`` that is a
    shrinkage: ``E[(n − δ sign n)²] = σ² − 2√(2/π) δσ + δ²``. The noise std that comes out
    at ``σ₀`` (the tilt's own) is ``σ = √(2/π) δ + √(σ₀² − (1 − 2/π) δ²)`` (``√(2/π) δ``, the
    least, where ``δ`` is too large for ``σ₀``). ``R`` grows with ``σ``: a few fixed-point
    iterations over the stack ``means + signal + σ/σ₀ · noise``.

    Parameters
    ----------
    signal, noise
        `(T, H, W)` the init's parts before the detector (``noise`` of std ``σ₀`` per tilt).
    means
        `(T,)` the tilts' means.
    """
    sigma0 = noise.to(torch.float64).std(dim=(1, 2), correction=0)
    base = signal.to(torch.float64) + means.to(torch.float64)[:, None, None]
    f = torch.ones_like(sigma0)
    c = math.sqrt(2.0 / math.pi)
    for _ in range(n_iter):
        x = base + f[:, None, None] * noise
        delta = STEP * float(x.max() - x.min())
        rest = torch.clamp(sigma0**2 - (1.0 - c * c) * delta**2, min=0.0)
        f = (c * delta + torch.sqrt(rest)) / sigma0
    return f


def apply_detector(
    tilts: torch.Tensor,
    calibration: Calibration,
    angles_deg: Sequence[float] | np.ndarray,
    target_mean: Sequence[float] | np.ndarray | torch.Tensor,
    target_std: Sequence[float] | np.ndarray | torch.Tensor,
) -> torch.Tensor:
    """Tilts `(T, H, W)` through the detector's MTF (:func:`detector_mtf`), matched to targets.

    The detector comes last in the calibrated model: FakET's styled tilts (made from NOISY and
    CONTENT before the detector) pass through it, then take the `(T,)` target mean and std
    (FakET's per-tilt match to the raw style tilts). Returns float32 on ``tilts``' device.
    """
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    if tilts.ndim != 3 or angles.size != tilts.shape[0]:
        raise InputError(f"tilts {tuple(tilts.shape)} and {angles.size} angles do not match")
    n, h, w = tilts.shape
    out = torch.empty((n, h, w), dtype=torch.float32, device=tilts.device)
    for t in range(n):
        mtf = torch.from_numpy(detector_mtf(calibration, float(angles[t]), (h, w)))
        x = torch.fft.rfft2(tilts[t].to(torch.float64)) * mtf.to(tilts.device)
        out[t] = torch.fft.irfft2(x, s=(h, w)).to(torch.float32)
    return match_mean_std(out, target_mean, target_std)


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
    before_detector
        Also return NOISY and CONTENT before the detector's MTF (``noisy_pre``,
        ``content_pre``): the style step's init and content when the detector comes last.
    """

    modalities: tuple[str, ...] = ("noisy", "content")
    content_factor: float = CONTENT_FACTOR
    tilt_offset: int = 0
    pixel_spacing: float | None = None
    before_detector: bool = False


def _before_detector(
    parts: dict[str, list[tuple[torch.Tensor, torch.Tensor]]],
    cal: Calibration,
    angles: np.ndarray,
) -> dict[str, torch.Tensor]:
    """``noisy_pre`` and ``content_pre``: the style step's init and content.

    Both carry the init's white noise raised by :func:`step_compensation` (CONTENT keeps its
    factor relative to NOISY).
    """
    means = torch.tensor([_model_at(cal, float(a))[2] for a in angles], dtype=torch.float64)
    signal = {m: torch.stack([s for s, _ in v]) for m, v in parts.items()}
    noise = {m: torch.stack([e for _, e in v]) for m, v in parts.items()}
    dev = signal["noisy"].device
    f = step_compensation(signal["noisy"], noise["noisy"], means.to(dev))
    return {
        f"{m}_pre": (means.to(dev)[:, None, None] + signal[m] + f[:, None, None] * noise[m]).to(
            torch.float32
        )
        for m in signal
    }


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
        Key of the noise streams (as :func:`faket_dask.stages.noise_apply.apply_noise`), with
        ``options.tilt_offset``.
    options
        Modalities, CONTENT's noise factor, tilt offset, pixel spacing check.

    Returns
    -------
    dict[str, torch.Tensor]
        One float32 `(T, H, W)` tensor per modality, in the requested order; with
        ``options.before_detector`` also ``noisy_pre`` and ``content_pre``.
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
    want = {m: f for m, f in factors.items() if m in mods or options.before_detector}
    parts: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {m: [] for m in want}
    for t in range(n):
        p = noiseless[t].to(torch.float64)
        if not bool(torch.isfinite(p).all()) or float(p.std()) == 0:
            raise InputError(f"noiseless tilt {t} is constant or not finite")
        eps = noise_field((h, w), seed, sample_id, options.tilt_offset + t, noiseless.device)
        if want:
            made = _one_tilt(p, eps, calibration, float(angles[t]), want)
            for m, (after, signal, noise) in made.items():
                if m in out:
                    out[m][t] = after
                if options.before_detector:
                    parts[m].append((signal, noise))
        if "baseline" in mods:
            out["baseline"][t] = _one_tilt(p, eps, calibration, None, {"b": 1.0})["b"][0]
    if options.before_detector:
        out.update(_before_detector(parts, calibration, angles))
    return out
