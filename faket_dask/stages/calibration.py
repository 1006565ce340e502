"""Calibrate a microscope from one real tilt-series alone: CTF, noise spectrum, SNR, per tilt.

What is estimated (:func:`calibrate`), per tilt of the reference:

* the radially averaged power spectrum ``P(ν)``
  (:func:`~faket_dask.stages.ctf.tilt_power_spectrum`);
* the defocus Δf from the Thon rings: first of the mean spectrum over all tilts (the rings
  add up, the noise averages out), then per tilt within ±15 % of it
  (:func:`~faket_dask.stages.ctf.fit_defocus`). Voltage, Cs and amplitude contrast are given
  or defaulted (300 kV, 2.7 mm, 0.07), not estimated;
* the split ``P = B + A·CTF²`` into the noise power spectrum ``B`` (a smooth, even radial
  model) and the signal's envelope ``A`` (:func:`~faket_dask.stages.ctf.fit_spectrum`);
* the noise variance (the mean of ``B`` over the tilt's frequencies), hence the SNR
  ``(var − noise var) / noise var``; the signal power spectrum (``A·CTF²`` in the fitted band,
  the measured ``P − B`` below it);
* the mean and std of the tilt;
* the tilt dependence: ``log mean``, ``log noise var`` and ``log SNR`` against ``1/cos θ`` (a
  slab's path length), whose slope of ``log mean`` is the thickness in inelastic mean free
  paths (the zero-loss fraction ``exp(−t / (λ cos θ))``).

Assumptions: an aligned series of one slab with the tilt axis on Y, no astigmatism, one
defocus per tilt (no defocus gradient across the tilted field), shot noise independent of
the signal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from faket_dask.angles import validate_angles
from faket_dask.errors import InputError
from faket_dask.io.textfile import read_text_file
from faket_dask.stages.ctf import (
    Optics,
    fit_defocus,
    fit_spectrum,
    radial_grid,
    tilt_power_spectrum,
)

__all__ = ["CALIBRATION_FORMAT", "Calibration", "TiltCalibration", "calibrate"]

CALIBRATION_FORMAT = "faket-dask/calibration/v1"

_PER_TILT_DEFOCUS = 0.15
"""Per-tilt defocus search range around the series' defocus (relative)."""


class TiltCalibration(BaseModel):
    """What was estimated on one tilt (see the module docstring).

    Attributes
    ----------
    angle_deg
        The tilt angle.
    defocus_um
        Underfocus fitted on this tilt alone (within ±15 % of the series').
    ring_score
        How much of the band's residual the rings explain on this tilt, in [0, 1].
    relative_rms
        RMS of ``log P − log(B + A·CTF²)`` over the band (goodness of fit).
    mean, std
        The tilt's mean and population std.
    noise_var, snr
        Noise variance (mean of ``B``) and ``(std² − noise_var) / noise_var``.
    noise_coef
        ``log B(ν) = Σ_j b_j (ν / 0.7)^(2j)``, ν in cycles/pixel.
    signal_power
        `(K,)` signal power spectrum on :attr:`Calibration.nu`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    angle_deg: float
    defocus_um: float
    ring_score: float
    relative_rms: float
    mean: float
    std: float
    noise_var: float
    snr: float
    noise_coef: tuple[float, ...]
    signal_power: tuple[float, ...]

    def noise_power(self, nu: np.ndarray) -> np.ndarray:
        """``B`` at ``nu`` cycles/pixel (any shape)."""
        x = (np.asarray(nu, dtype=np.float64) / 0.7) ** 2
        return np.exp(np.polynomial.polynomial.polyval(x, self.noise_coef))


class Calibration(BaseModel):
    """A microscope calibrated from one tilt-series (JSON: :meth:`save` / :meth:`load`).

    Attributes
    ----------
    pixel_spacing
        Å per pixel of the reference (frequencies below are in cycles/pixel at it).
    shape
        `(T, H, W)` of the reference.
    voltage_kv, cs_mm, amplitude_contrast
        The CTF's fixed parameters; ``given`` says which came from the user.
    defocus_um
        Underfocus fitted on the mean spectrum of the series.
    ring_score
        How much of the mean spectrum's residual the rings explain (0: no rings seen).
    n_zeros
        CTF zeros inside the fitted band at that defocus (the rings the fit could use).
    nu
        `(K,)` radial frequency grid (cycles/pixel) of the tilts' ``signal_power``.
    nu_range
        The band in which ``B`` and ``A`` were fitted.
    tilts
        One :class:`TiltCalibration` per reference tilt, by increasing angle.
    tilt_dependence
        Linear fits against ``1/cos θ``: ``log_mean``, ``log_noise_var``, ``log_snr`` (each
        ``[intercept, slope]``) and ``thickness_mfp`` (−slope of ``log_mean``).
    estimated, given
        Names of what was estimated from the data and of what was given by the user.
    provenance
        Source file, tool version, ...
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["faket-dask/calibration/v1"] = "faket-dask/calibration/v1"
    pixel_spacing: float
    shape: tuple[int, int, int]
    voltage_kv: float
    cs_mm: float
    amplitude_contrast: float
    defocus_um: float
    ring_score: float
    n_zeros: int
    nu: tuple[float, ...]
    nu_range: tuple[float, float]
    tilts: tuple[TiltCalibration, ...]
    tilt_dependence: dict[str, Any]
    estimated: tuple[str, ...]
    given: tuple[str, ...] = ()
    provenance: dict[str, Any] = {}

    @property
    def optics(self) -> Optics:
        """The fixed CTF parameters."""
        return Optics(self.voltage_kv, self.cs_mm, self.amplitude_contrast)

    @property
    def angles_deg(self) -> np.ndarray:
        """`(T,)` the reference's tilt angles."""
        return np.array([t.angle_deg for t in self.tilts])

    @property
    def snr(self) -> np.ndarray:
        """`(T,)` the per-tilt SNR."""
        return np.array([t.snr for t in self.tilts])

    def to_json(self) -> str:
        """The calibration as indented JSON."""
        return self.model_dump_json(indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "calibration") -> Calibration:
        """Parse :meth:`to_json`'s output; ``InputError`` naming ``source`` if it is not one."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise InputError(f"{source} is not a calibration: {loc}: {err['msg']}") from None

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path``."""
        path = Path(path)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibration written by :meth:`save`."""
        path = Path(path)
        return cls.from_json(read_text_file(path, "calibration file"), source=str(path))

    def interpolation(self, angle_deg: float) -> tuple[int, int, float]:
        """The two reference tilts about ``angle_deg`` and the weight of the second.

        Angles outside the reference's range take its end tilt.
        """
        a = self.angles_deg
        if angle_deg <= a[0]:
            return 0, 0, 0.0
        if angle_deg >= a[-1]:
            return a.size - 1, a.size - 1, 0.0
        j = int(np.searchsorted(a, angle_deg))
        w = (angle_deg - a[j - 1]) / (a[j] - a[j - 1])
        return j - 1, j, float(w)


def _secant_fit(angles: np.ndarray, values: np.ndarray) -> list[float]:
    """``[intercept, slope]`` of ``log(values)`` against ``1/cos θ`` (NaN if undefined)."""
    sec = 1.0 / np.cos(np.deg2rad(angles))
    ok = values > 0
    if ok.sum() < 2 or np.ptp(sec[ok]) == 0:
        return [float("nan"), float("nan")]
    slope, icpt = np.polyfit(sec[ok], np.log(values[ok]), 1)
    return [float(icpt), float(slope)]


def _series_defocus(
    spectra: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    pixel_spacing: float,
    optics: Optics,
    defocus_range_um: tuple[float, float],
    nu_range: tuple[float, float],
) -> tuple[float, float]:
    """Defocus of the mean spectrum, each tilt's normalised by its high-frequency level."""
    freq, _, counts = spectra[0]
    top = freq >= nu_range[1] - 0.1
    mean = np.mean([p / p[top].mean() for _, p, _ in spectra], axis=0)
    return fit_defocus(freq, mean, counts, pixel_spacing, optics, defocus_range_um, nu_range)


def _tilt(
    moments: tuple[float, float, tuple[int, int]],
    angle: float,
    spectrum: tuple[np.ndarray, np.ndarray, np.ndarray],
    pixel_spacing: float,
    defocus_um: float,
    optics: Optics,
    nu_range: tuple[float, float],
) -> TiltCalibration:
    freq, power, counts = spectrum
    lo, hi = defocus_um * (1 - _PER_TILT_DEFOCUS), defocus_um * (1 + _PER_TILT_DEFOCUS)
    df_t, score = fit_defocus(freq, power, counts, pixel_spacing, optics, (lo, hi), nu_range)
    fit = fit_spectrum(freq, power, counts, pixel_spacing, defocus_um, optics, nu_range)
    mean, var, shape = moments
    radius, _ = radial_grid(*shape)
    noise_var = float(fit.noise_power(radius).mean())
    step = freq[1] - freq[0]
    edges = np.concatenate([freq - step / 2, freq[-1:] + step / 2]) / pixel_spacing
    in_band = freq >= fit.nu_range[0]
    model = fit.signal_envelope(freq) * optics.ctf2_bins(edges, defocus_um)
    measured = np.maximum(power - fit.noise_power(freq), 0.0)
    signal = np.where(in_band, model, measured)
    return TiltCalibration(
        angle_deg=float(angle),
        defocus_um=df_t,
        ring_score=score,
        relative_rms=fit.relative_rms,
        mean=mean,
        std=math.sqrt(var),
        noise_var=noise_var,
        snr=max(var - noise_var, 0.0) / noise_var,
        noise_coef=fit.noise_coef,
        signal_power=tuple(float(v) for v in signal),
    )


def _checked_order(
    data: Any, angles_deg: Sequence[float] | np.ndarray, pixel_spacing: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """The stack order by increasing angle and the sorted angles; ``InputError`` on bad input."""
    if len(getattr(data, "shape", ())) != 3 or min(data.shape[1:]) < 16:
        raise InputError(f"calibration needs a (T, H, W) tilt-series of >= 16 px, got {data.shape}")
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    if angles.size != data.shape[0]:
        raise InputError(f"the series has {data.shape[0]} tilts but {angles.size} angles")
    if not pixel_spacing or not pixel_spacing > 0:
        raise InputError("the reference's pixel spacing is unknown; give --pixel-spacing (Å)")
    order = np.argsort(angles, kind="stable")
    return order, validate_angles(angles[order], source="reference tilt angles")


def _read_tilts(
    data: np.ndarray, order: np.ndarray
) -> tuple[
    list[tuple[np.ndarray, np.ndarray, np.ndarray]], list[tuple[float, float, tuple[int, int]]]
]:
    """The power spectrum and ``(mean, var, shape)`` of each tilt of ``data``, in ``order``."""
    spectra, moments = [], []
    for i in order:  # one tilt in memory at a time
        im = np.asarray(data[int(i)], dtype=np.float64)
        if not np.all(np.isfinite(im)) or im.std() == 0:
            raise InputError(f"reference tilt {int(i)} is constant or not finite")
        spectra.append(tilt_power_spectrum(im))
        moments.append((float(im.mean()), float(im.var()), im.shape))
    return spectra, moments


def _tilt_dependence(angles: np.ndarray, per_tilt: list[TiltCalibration]) -> dict[str, Any]:
    """Secant fits of the log mean, noise variance and SNR over angle; the thickness in MFPs."""
    dep: dict[str, Any] = {
        "log_mean": _secant_fit(angles, np.array([t.mean for t in per_tilt])),
        "log_noise_var": _secant_fit(angles, np.array([t.noise_var for t in per_tilt])),
        "log_snr": _secant_fit(angles, np.array([t.snr for t in per_tilt])),
    }
    dep["thickness_mfp"] = -dep["log_mean"][1]
    return dep


def calibrate(
    tilts: np.ndarray,
    angles_deg: Sequence[float] | np.ndarray,
    pixel_spacing: float | None,
    optics: Optics | None = None,
    defocus_range_um: tuple[float, float] = (0.5, 12.0),
    nu_range: tuple[float, float] = (0.15, 0.7),
    provenance: dict[str, Any] | None = None,
) -> Calibration:
    """Calibrate the microscope of a real (aligned) tilt-series from the series alone.

    Parameters
    ----------
    tilts
        `(T, H, W)` tilt-series (any real dtype; read tilt by tilt in float64).
    angles_deg
        `(T,)` tilt angles in degrees (any order; the result is by increasing angle).
    pixel_spacing
        Å per pixel (``None``, unknown: an ``InputError``).
    optics
        Voltage, Cs and amplitude contrast given by the user (``None``: the defaults,
        recorded as defaulted).
    defocus_range_um
        Underfocus search range (µm).
    nu_range
        The band of the spectrum fits in cycles/pixel (the low end should lie past the
        specimen's strong low-frequency structure; the CTF's first zero may lie below it).
    provenance
        Extra provenance to record.

    Returns
    -------
    Calibration
    """
    data = tilts
    order, angles = _checked_order(data, angles_deg, pixel_spacing)
    spacing = float(pixel_spacing or 0.0)  # > 0: checked above
    given = () if optics is None else ("voltage_kv", "cs_mm", "amplitude_contrast")
    optics = optics or Optics()
    spectra, moments = _read_tilts(data, order)
    try:
        defocus, ring = _series_defocus(
            spectra, spacing, optics, defocus_range_um, nu_range
        )
        per_tilt = [
            _tilt(m, a, sp, spacing, defocus, optics, nu_range)
            for m, a, sp in zip(moments, angles, spectra, strict=True)
        ]
    except ValueError as e:
        raise InputError(f"cannot fit the reference's spectrum: {e}") from None
    dep = _tilt_dependence(angles, per_tilt)
    return Calibration(
        pixel_spacing=spacing,
        shape=tuple(int(s) for s in data.shape),
        voltage_kv=optics.voltage_kv,
        cs_mm=optics.cs_mm,
        amplitude_contrast=optics.amplitude_contrast,
        defocus_um=defocus,
        ring_score=ring,
        n_zeros=optics.n_zeros(
            nu_range[0] / spacing, nu_range[1] / spacing, defocus
        ),
        nu=tuple(float(v) for v in spectra[0][0]),
        nu_range=(float(nu_range[0]), float(nu_range[1])),
        tilts=tuple(per_tilt),
        tilt_dependence=dep,
        estimated=(
            "defocus_um",
            "noise_power",
            "signal_power",
            "snr",
            "mean",
            "std",
            "tilt_dependence",
        ),
        given=given,
        provenance=dict(provenance or {}),
    )
