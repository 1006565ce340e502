"""FakET's tilt-dependent noise model: fit it, store it, evaluate its curves at given angles.

The model (``faket-spec.md`` §1.3, §1.4) pairs a noiseless tilt-series with a realistic
("reference") tilt-series of the same sample. For every tilt ``t`` it records

* ``r[t]``: the Pearson correlation of the two standardised tilts, clipped to [0, 1]. It is
  the closed form of the reference's bisection ``argmin_r std(reference - r * clean)``;
* ``sigma[t] = sqrt(1 - r[t]**2)``: the std of that residual;
* ``mean[t]``, ``std[t]``: the raw mean and population std of the reference tilt.

Each statistic's curve is fitted with ``np.polyfit`` over the tilt *index* ``0..T-1`` (degree 2
by default), evaluated at the same indices and averaged over the pairs. The degree-0 fit (each
curve's mean) gives the tilt-independent statistics of BASELINE.

Drawing the noise and applying the model to a noiseless series is
:mod:`faket_dask.stages.noise_apply`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from faket_dask import __version__
from faket_dask.angles import angle_array, validate_angles
from faket_dask.errors import InputError
from faket_dask.io.jsonable import jsonable
from faket_dask.io.textfile import read_text_file

__all__ = [
    "ANGLE_TOL_DEG",
    "CONTENT_FACTOR",
    "MODALITIES",
    "NOISE_FILENAME",
    "STATS",
    "Curves",
    "NoiseModel",
    "fit_noise_model",
    "fit_noise_model_from_reference",
]

STATS = ("r", "sigma", "mean", "std")
"""The four per-tilt statistics of the model, in the order ``curves`` returns them."""

MODALITIES = ("noisy", "content", "baseline")
"""The modalities ``apply_noise`` can produce."""

CONTENT_FACTOR = 0.25
"""CONTENT's noise std relative to NOISY's (the reference's constant)."""

ANGLE_TOL_DEG = 1e-3
"""Two tilt angles closer than this (degrees) are the same tilt."""

NOISE_FILENAME = "noise.json"
"""File name of a saved noise model (``save``/``load`` append it to a directory)."""

_FORMAT: Final = "faket-dask/noise-model/v1"

Array = np.ndarray | torch.Tensor


class Curves(BaseModel):
    """One sequence of numbers per statistic: ``r``, ``sigma``, ``mean``, ``std``.

    Used for per-tilt curves (length ``T``) and for polynomial coefficients over the tilt
    index (length ``degree + 1``, highest power first, as ``np.polyfit`` returns them).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    r: tuple[float, ...]
    sigma: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @model_validator(mode="after")
    def _check(self) -> Curves:
        if len({len(getattr(self, s)) for s in STATS}) != 1:
            raise ValueError("r, sigma, mean and std must have the same length")
        for s in STATS:
            if not all(math.isfinite(v) for v in getattr(self, s)):
                raise ValueError(f"{s} has non-finite values")
        return self

    def __len__(self) -> int:
        return len(self.r)

    def array(self, stat: str) -> np.ndarray:
        """Return one statistic as a float64 numpy array."""
        return np.asarray(getattr(self, stat), dtype=np.float64)

    @classmethod
    def from_arrays(cls, values: dict[str, np.ndarray]) -> Curves:
        """Build from a dict of 1-D arrays keyed by statistic name."""
        return cls(**{s: tuple(float(v) for v in np.ravel(values[s])) for s in STATS})


class NoiseModel(BaseModel):
    """A fitted tilt-dependent noise model (JSON-serialisable, immutable).

    Attributes
    ----------
    angles_deg
        The ``T`` tilt angles (degrees) the model was fitted at, strictly increasing
        (``faket_dask.angles.validate_angles``), one per tilt index.
    degree
        Degree of the polynomial fits over the tilt index (FakET: 2).
    raw
        The measured per-tilt curves, one ``Curves`` (each of length ``T``) per pair.
    fit
        The degree-``degree`` fits, evaluated at the tilt indices and averaged over pairs.
    baseline
        The degree-0 fits (constant across tilts), averaged over pairs: BASELINE's statistics.
    fit_coefficients, baseline_coefficients
        The pair-averaged ``np.polyfit`` coefficients over the tilt index (highest power
        first); ``np.polyval`` of them at a fractional index evaluates the fit between tilts.
    provenance
        Where the model came from: ``method`` (``"paired"`` or ``"reference-only"``), files,
        creation time, tool version, ``snr`` (reference-only mode), ...
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["faket-dask/noise-model/v1"] = _FORMAT
    angles_deg: tuple[float, ...]
    degree: int = 2
    raw: tuple[Curves, ...]
    fit: Curves
    baseline: Curves
    fit_coefficients: Curves
    baseline_coefficients: Curves
    provenance: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> NoiseModel:
        n = len(self.angles_deg)
        validate_angles(np.asarray(self.angles_deg), source="angles_deg")
        _check_degree(self.degree, n)
        if not self.raw:
            raise ValueError("raw must hold the curves of at least one pair")
        for i, c in enumerate(self.raw):
            if len(c) != n:
                raise ValueError(f"raw[{i}] has {len(c)} tilts but there are {n} angles")
        for name in ("fit", "baseline"):
            c = getattr(self, name)
            if len(c) != n:
                raise ValueError(f"{name} has {len(c)} tilts but there are {n} angles")
            if min(c.std) <= 0:
                raise ValueError(f"{name}.std must be > 0 at every tilt")
        if len(self.fit_coefficients) != self.degree + 1:
            raise ValueError(f"fit_coefficients must hold degree + 1 = {self.degree + 1} values")
        if len(self.baseline_coefficients) != 1:
            raise ValueError("baseline_coefficients must hold 1 value (degree 0)")
        return self

    # ----------------------------------------------------------------------------- files

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON to ``path`` (``path/noise.json`` if it is a directory)."""
        path = Path(path)
        if path.is_dir():
            path = path / NOISE_FILENAME
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> NoiseModel:
        """Read a model written by ``save`` (``path/noise.json`` if ``path`` is a directory).

        Raises
        ------
        InputError
            The file is missing or unreadable, is not JSON, or is not a valid noise model.
        """
        path = Path(path)
        if path.is_dir():
            path = path / NOISE_FILENAME
        text = read_text_file(path, "noise model file")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"noise model file {path} is not valid JSON: {e}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise InputError(f"noise model file {path} is invalid: {_first_error(e)}") from None

    # ---------------------------------------------------------------------------- curves

    @property
    def n_tilts(self) -> int:
        """Number of fitted tilts ``T``."""
        return len(self.angles_deg)

    def tilt_indices(self, angles_deg: Sequence[float] | np.ndarray) -> np.ndarray:
        """Map tilt angles (degrees) to (fractional) tilt indices of the fit.

        An angle within ``ANGLE_TOL_DEG`` of a fitted angle maps to that tilt's integer index;
        any other angle inside the fitted range maps by linear interpolation of the fitted
        angles (strictly increasing). Angles outside the range raise ``InputError``.
        """
        a = angle_array(angles_deg)
        fitted = np.asarray(self.angles_deg, dtype=np.float64)
        lo, hi = float(fitted[0]), float(fitted[-1])
        outside = a[(a < lo - ANGLE_TOL_DEG) | (a > hi + ANGLE_TOL_DEG)]
        if outside.size:
            raise InputError(
                f"tilt angles {_fmt(outside)} deg lie outside the noise model's fitted range "
                f"[{lo:g}, {hi:g}] deg; fit a model that covers them"
            )
        nearest = np.abs(a[:, None] - fitted[None, :]).argmin(axis=1)
        matched = np.abs(a - fitted[nearest]) <= ANGLE_TOL_DEG
        frac = np.interp(a, fitted, np.arange(fitted.size, dtype=np.float64))
        index: np.ndarray = np.where(matched, nearest.astype(np.float64), frac)
        return index

    def curves(
        self, angles_deg: Sequence[float] | np.ndarray, baseline: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(r, sigma, mean, std)`` at the given tilt angles, float64 arrays ``(T,)``.

        Angles that match fitted angles (within ``ANGLE_TOL_DEG``) take the stored fitted
        values; other angles inside the fitted range evaluate the pair-averaged polynomial at
        their fractional tilt index (see ``tilt_indices``). ``baseline=True`` returns the
        degree-0 (constant) statistics of BASELINE.
        """
        idx = self.tilt_indices(angles_deg)
        stored = self.baseline if baseline else self.fit
        coeffs = self.baseline_coefficients if baseline else self.fit_coefficients
        whole = idx == np.round(idx)
        at = np.where(whole, idx, 0).astype(np.int64)
        out = tuple(
            np.where(whole, stored.array(s)[at], np.polyval(coeffs.array(s), idx)) for s in STATS
        )
        if np.any(out[3] <= 0):
            bad = np.asarray(angles_deg, dtype=np.float64).ravel()[out[3] <= 0]
            raise InputError(f"the noise model's fitted std is <= 0 at angles {_fmt(bad)} deg")
        return out  # type: ignore[return-value]


# -------------------------------------------------------------------------------- fitting


def fit_noise_model(
    pairs: Sequence[tuple[Array, Array]],
    angles_deg: Sequence[float] | np.ndarray,
    degree: int = 2,
    provenance: dict[str, Any] | None = None,
) -> NoiseModel:
    """Fit FakET's noise model from (clean, reference) tilt-series pairs.

    Parameters
    ----------
    pairs
        ``(clean, reference)`` tilt-series of the same sample, each ``(T, H, W)``, numpy or
        torch (any device); read tilt by tilt in float64, so memory maps work.
    angles_deg
        The ``T`` tilt angles in degrees, strictly increasing, one per tilt index.
    degree
        Degree of the polynomial fits over the tilt index (FakET: 2), ``0 <= degree < T``.
    provenance
        Extra provenance (files, ...) stored in the model; ``method`` is set to ``"paired"``.

    Raises
    ------
    InputError
        Mismatched shapes or tilt counts, NaN/Inf values, or a constant tilt.
    """
    angles = validate_angles(angles_deg, source="angles_deg")
    n = len(angles)
    degree = _check_degree_input(degree, n)
    pairs = list(pairs)
    if not pairs:
        raise InputError("fit_noise_model needs at least one (clean, reference) pair")
    raw = []
    for p, pair in enumerate(pairs):
        try:
            clean, ref = pair
        except (TypeError, ValueError):
            raise InputError(f"pair {p} is not a (clean, reference) pair") from None
        clean = _as_stack(clean, f"pair {p} clean")
        ref = _as_stack(ref, f"pair {p} reference")
        if tuple(clean.shape) != tuple(ref.shape):
            raise InputError(
                f"pair {p}: clean shape {tuple(clean.shape)} != reference shape {tuple(ref.shape)}"
            )
        if clean.shape[0] != n:
            raise InputError(f"pair {p} has {clean.shape[0]} tilts but {n} angles were given")
        curves = {s: np.empty(n) for s in STATS}
        for t in range(n):
            c = _tilt64(clean, t)
            s = _tilt64(ref, t)
            mu_c, sd_c = _moments(c, f"pair {p} clean tilt {t}")
            mu_s, sd_s = _moments(s, f"pair {p} reference tilt {t}")
            corr = float(np.vdot((c - mu_c) / sd_c, (s - mu_s) / sd_s) / c.size)
            r = min(max(corr, 0.0), 1.0)
            curves["r"][t] = r
            curves["sigma"][t] = math.sqrt(1.0 - r * r)
            curves["mean"][t] = mu_s
            curves["std"][t] = sd_s
        raw.append(curves)
    return _build_model(angles, degree, raw, "paired", {"n_pairs": len(pairs)}, provenance)


def fit_noise_model_from_reference(
    reference: Array,
    angles_deg: Sequence[float] | np.ndarray,
    snr: float | Sequence[float] | np.ndarray,
    degree: int = 2,
    provenance: dict[str, Any] | None = None,
) -> NoiseModel:
    """Fit a noise model from a realistic tilt-series alone, given its signal-to-noise ratio.

    For real data without a clean counterpart. The ``mean``/``std`` curves are measured on
    ``reference`` and fitted exactly as in ``fit_noise_model``. ``r`` and ``sigma`` come from
    the SNR: the noisy image is ``r * signal + sigma * noise`` with a unit-variance signal and
    unit-variance noise and ``r**2 + sigma**2 = 1``, so the signal variance is ``r**2``, the
    noise variance ``sigma**2 = 1 - r**2`` and ``SNR = r**2 / (1 - r**2)``, i.e.
    ``r = sqrt(snr / (1 + snr))`` and ``sigma = sqrt(1 / (1 + snr))``. A per-tilt SNR
    (``T`` values) gives per-tilt curves that are polynomial-fitted like the measured ones.

    Parameters
    ----------
    reference
        The realistic tilt-series ``(T, H, W)``, numpy or torch.
    angles_deg
        The ``T`` tilt angles in degrees.
    snr
        One SNR (>= 0, finite) for all tilts, or ``T`` of them.
    degree
        Degree of the polynomial fits over the tilt index.
    provenance
        Extra provenance; ``method`` is set to ``"reference-only"`` and ``snr`` is recorded.
    """
    angles = validate_angles(angles_deg, source="angles_deg")
    n = len(angles)
    degree = _check_degree_input(degree, n)
    ref = _as_stack(reference, "reference")
    if ref.shape[0] != n:
        raise InputError(f"reference has {ref.shape[0]} tilts but {n} angles were given")
    try:
        snr_arr = np.asarray(snr, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"snr must be a number or {n} numbers, got {snr!r}") from None
    if snr_arr.ndim > 1 or (snr_arr.ndim == 1 and snr_arr.size != n):
        raise InputError(f"snr must be one number or {n} numbers (one per tilt)")
    if not np.all(np.isfinite(snr_arr)) or np.any(snr_arr < 0):
        raise InputError("snr must be finite and >= 0")
    snr_t = np.broadcast_to(snr_arr, (n,))
    curves = {
        "r": np.sqrt(snr_t / (1.0 + snr_t)),
        "sigma": np.sqrt(1.0 / (1.0 + snr_t)),
        "mean": np.empty(n),
        "std": np.empty(n),
    }
    for t in range(n):
        curves["mean"][t], curves["std"][t] = _moments(_tilt64(ref, t), f"reference tilt {t}")
    extra = {"snr": snr_arr.tolist()}
    return _build_model(angles, degree, [curves], "reference-only", extra, provenance)


def _build_model(
    angles: np.ndarray,
    degree: int,
    raw: list[dict[str, np.ndarray]],
    method: str,
    extra: dict[str, Any],
    provenance: dict[str, Any] | None,
) -> NoiseModel:
    idx = np.arange(len(angles), dtype=np.float64)
    fit, fit_c, base, base_c = {}, {}, {}, {}
    for s in STATS:
        per_pair = [c[s] for c in raw]
        fit[s], fit_c[s] = _fit_average(idx, per_pair, degree)
        base[s], base_c[s] = _fit_average(idx, per_pair, 0)
    prov: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "tool": "faket-dask",
        "tool_version": __version__,
        "degree": degree,
        "n_tilts": len(angles),
        **extra,
    }
    prov.update(jsonable(provenance or {}))
    prov["method"] = method
    try:
        return NoiseModel(
            angles_deg=tuple(float(a) for a in angles),
            degree=degree,
            raw=tuple(Curves.from_arrays(c) for c in raw),
            fit=Curves.from_arrays(fit),
            baseline=Curves.from_arrays(base),
            fit_coefficients=Curves.from_arrays(fit_c),
            baseline_coefficients=Curves.from_arrays(base_c),
            provenance=prov,
        )
    except ValidationError as e:
        raise InputError(f"cannot build a noise model: {_first_error(e)}") from None


def _fit_average(
    idx: np.ndarray, curves: list[np.ndarray], degree: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fit each curve over ``idx``; return the fitted curves' mean and the coefficients' mean."""
    coeffs = [np.polyfit(idx, c, degree) for c in curves]
    fitted = np.mean([np.polyval(k, idx) for k in coeffs], axis=0)
    return fitted, np.mean(coeffs, axis=0)


# ------------------------------------------------------------------------------ helpers


def _as_stack(a: Any, name: str) -> Any:
    """Return ``a`` (torch or numpy-like with a shape) after checking it is ``(T, H, W)``."""
    if not isinstance(a, torch.Tensor) and not hasattr(a, "shape"):
        a = np.asarray(a)
    if len(a.shape) != 3 or 0 in tuple(a.shape):
        raise InputError(f"{name} must be a non-empty (T, H, W) stack, got shape {tuple(a.shape)}")
    return a


def _tilt64(a: Any, t: int) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a[t].detach().to(device="cpu", dtype=torch.float64).numpy()
    return np.asarray(a[t], dtype=np.float64)


def _moments(x: np.ndarray, where: str) -> tuple[float, float]:
    """Mean and population std of ``x``; InputError for NaN/Inf or a constant image."""
    with np.errstate(invalid="ignore", over="ignore"):
        mu = float(x.mean())
        sd = float(x.std())
    if not (math.isfinite(mu) and math.isfinite(sd)):
        raise InputError(f"{where} contains NaN or Inf values")
    if sd == 0:
        raise InputError(
            f"{where} is constant (std 0), so its statistics cannot be fitted; drop that tilt "
            "(and its angle) from the series, or check the file"
        )
    return mu, sd


def _check_degree(degree: Any, n_tilts: int) -> int:
    """Validate a fit degree; raise ValueError (pydantic) on problems."""
    try:
        d = None if isinstance(degree, bool) else operator.index(degree)
    except TypeError:
        d = None
    if d is None or not 0 <= d < n_tilts:
        raise ValueError(
            f"degree must be an integer in [0, {n_tilts - 1}] for {n_tilts} tilts, got {degree!r}"
        )
    return d


def _check_degree_input(degree: Any, n_tilts: int) -> int:
    try:
        return _check_degree(degree, n_tilts)
    except ValueError as e:
        raise InputError(str(e)) from None


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def _fmt(values: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:limit])
    return shown + (f", ... ({values.size} in all)" if values.size > limit else "")
