"""FakET's tilt-dependent noise model: fit it, store it, draw noise, apply it.

The model (``faket-spec.md`` §1.3, §1.4) pairs a noiseless tilt-series with a realistic
("reference") tilt-series of the same sample. For every tilt ``t`` it records

* ``r[t]``: the Pearson correlation of the two standardised tilts, clipped to [0, 1]. It is
  the closed form of the reference's bisection ``argmin_r std(reference - r * clean)``;
* ``sigma[t] = sqrt(1 - r[t]**2)``: the std of that residual;
* ``mean[t]``, ``std[t]``: the raw mean and population std of the reference tilt.

Each statistic's curve is fitted with ``np.polyfit`` over the tilt *index* ``0..T-1`` (degree 2
by default), evaluated at the same indices and averaged over the pairs. The degree-0 fit (each
curve's mean) gives the tilt-independent statistics of BASELINE.

Noise is applied tilt by tilt (``apply_noise``)::

    x = standardise(P[t]) * r[t] + eps[t] * sigma[t]      # CONTENT: sigma[t] * 0.25, same eps
    x = x / std(x) * std[t];  x = x - mean(x) + mean[t]   # match_mean_std

``eps`` comes either from a stream keyed by ``(seed, sample_id, tilt_index)`` (default, any
worker can draw any tilt, on CPU or GPU) or, with ``rng="faket"``, from the reference's own
draw ``np.random.default_rng(seed).normal(size=T*H*W)`` in float64.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from faket_dask import __version__
from faket_dask.angles import validate_angles
from faket_dask.errors import InputError
from faket_dask.io.jsonable import jsonable
from faket_dask.stages._stats import match_mean_std

__all__ = [
    "ANGLE_TOL_DEG",
    "CONTENT_FACTOR",
    "MODALITIES",
    "NOISE_FILENAME",
    "STATS",
    "Curves",
    "NoiseDraw",
    "NoiseModel",
    "apply_noise",
    "faket_seed",
    "fit_noise_model",
    "fit_noise_model_from_reference",
    "match_mean_std",
    "noise_field",
    "stream_key",
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
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(f"noise model file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read noise model file {path}: {e}") from None
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
        a = _as_angle_array(angles_deg)
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


# --------------------------------------------------------------------------- noise draws


def stream_key(seed: int, sample_id: int, tilt_index: int, stream: str = "noise") -> int:
    """Return the 63-bit key of the random stream ``(stream, seed, sample_id, tilt_index)``.

    The key is the first 8 bytes (big-endian) of the SHA-256 of
    ``"faket-dask/<stream>/<seed>/<sample_id>/<tilt_index>"``, with the top bit cleared, so
    every (seed, sample, tilt) has its own stream that any worker can recreate.
    """
    try:
        ints = [operator.index(v) for v in (seed, sample_id, tilt_index)]
    except TypeError:
        raise InputError(
            f"seed, sample_id and tilt_index must be integers, got {seed!r}, {sample_id!r}, "
            f"{tilt_index!r}"
        ) from None
    text = "faket-dask/{}/{}/{}/{}".format(stream, *ints)
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def noise_field(
    shape_hw: tuple[int, int],
    seed: int,
    sample_id: int,
    tilt_index: int,
    device: str | torch.device = "cpu",
    generator_kind: Literal["keyed", "faket"] = "keyed",
    stream: str = "noise",
) -> torch.Tensor:
    """Draw one tilt's i.i.d. N(0, 1) noise field ``(H, W)`` on ``device``.

    ``generator_kind="keyed"`` (default): ``torch.randn`` float32 from a ``torch.Generator`` on
    ``device`` seeded with ``stream_key(seed, sample_id, tilt_index, stream)``. The same key
    gives identical bytes on the same device type, whichever worker draws it and in whatever
    order; CPU and CUDA draws differ.

    ``generator_kind="faket"``: tilt ``tilt_index`` of the reference's draw
    ``np.random.default_rng(faket_seed(seed, sample_id)).normal(size=T*H*W)`` reshaped
    C-order, float64; ``stream`` is ignored. It draws and discards the earlier tilts
    (cost grows with ``tilt_index``): meant for checks; ``apply_noise`` draws sequentially.
    """
    h, w = _check_shape_hw(shape_hw)
    if generator_kind == "keyed":
        gen = torch.Generator(device=device)
        gen.manual_seed(stream_key(seed, sample_id, tilt_index, stream))
        return torch.randn((h, w), generator=gen, device=device, dtype=torch.float32)
    if generator_kind == "faket":
        t = operator.index(tilt_index)
        if t < 0:
            raise InputError(f"tilt_index must be >= 0, got {t}")
        tilts = _faket_tilts(seed, (h, w), sample_id)
        for _ in range(t):
            next(tilts)
        return torch.from_numpy(next(tilts)).to(device)
    raise InputError(f"generator_kind must be 'keyed' or 'faket', got {generator_kind!r}")


def faket_seed(seed: int, sample_id: int) -> list[int]:
    """The numpy seed of sample ``sample_id`` under ``rng="faket"``: ``[sample_id, seed]``.

    The reference drew tomogram ``N``'s noise from ``default_rng(N)``. Seeding with the
    entropy ``[N, seed]`` draws per sample as the reference drew per tomogram: with dataset
    seed 0 it *is* ``default_rng(N)`` (numpy's ``SeedSequence`` ignores trailing zero words),
    and other dataset seeds give other streams.
    """
    return [operator.index(sample_id), operator.index(seed)]


def _faket_tilts(
    seed: int, shape_hw: tuple[int, int], sample_id: int = 0
) -> Iterator[np.ndarray]:
    """Yield the reference's flat float64 N(0, 1) draw one ``(H, W)`` tilt at a time.

    ``Generator.normal`` fills its output sequentially, so consecutive ``(H, W)`` draws from
    one generator concatenate to ``default_rng(faket_seed(seed, sample_id)).normal(size=T*H*W)``.
    """
    try:
        rng = np.random.default_rng(faket_seed(seed, sample_id))
    except (TypeError, ValueError) as e:
        raise InputError(f"seed must be a non-negative integer, got {seed!r} ({e})") from None
    while True:
        yield rng.normal(size=shape_hw)


# ------------------------------------------------------------------------------ applying


@dataclass(frozen=True)
class NoiseDraw:
    """Which modalities :func:`apply_noise` makes and how it draws their noise.

    Attributes
    ----------
    rng
        ``"keyed"``: ``noise_field`` per tilt, computed in float32. ``"faket"``: the
        reference's float64 numpy draw, computed in float64, then cast.
    modalities
        Which of ``"noisy"``, ``"content"``, ``"baseline"`` to return.
    content_factor
        CONTENT's noise std relative to NOISY's (FakET: 0.25).
    tilt_offset
        Index of the first given tilt in its whole series, so a block of tilts draws the keyed
        streams of its own tilts (``rng="keyed"`` only; used by the distributed path).
    """

    rng: Literal["keyed", "faket"] = "keyed"
    modalities: Sequence[str] = MODALITIES
    content_factor: float = CONTENT_FACTOR
    tilt_offset: int = 0

    def check(self) -> tuple[str, ...]:
        """Raise :class:`InputError` for options that cannot work; return the modalities."""
        mods = tuple(self.modalities)
        unknown = [m for m in mods if m not in MODALITIES]
        if unknown or not mods or len(set(mods)) != len(mods):
            raise InputError(
                f"modalities must be distinct names among {', '.join(MODALITIES)}, got {mods}"
            )
        cf = self.content_factor
        if not (math.isfinite(cf) and cf >= 0):
            raise InputError(f"content_factor must be finite and >= 0, got {cf}")
        if self.rng not in ("keyed", "faket"):
            raise InputError(f"rng must be 'keyed' or 'faket', got {self.rng!r}")
        if self.tilt_offset and self.rng == "faket":
            raise InputError(
                "rng='faket' draws the whole series in order; use rng='keyed' for blocks"
            )
        return mods


def _modality_curves(
    model: NoiseModel, angles: np.ndarray, mods: Sequence[str], content_factor: float
) -> dict[str, tuple[np.ndarray, ...]]:
    """Per modality, ``(r, sigma, mean, std)`` at ``angles``, each ``(T,)``."""
    params: dict[str, tuple[np.ndarray, ...]] = {}
    if "noisy" in mods or "content" in mods:
        r, sigma, mean, std = model.curves(angles)
        if "noisy" in mods:
            params["noisy"] = (r, sigma, mean, std)
        if "content" in mods:
            params["content"] = (r, sigma * content_factor, mean, std)
    if "baseline" in mods:
        params["baseline"] = model.curves(angles, baseline=True)
    return params


def _standardised(p: torch.Tensor, t: int) -> torch.Tensor:
    """Tilt ``t`` (``p``, ``(H, W)``) minus its mean, over its population std."""
    sd, mu = torch.std_mean(p, correction=0)
    sd_f, mu_f = float(sd), float(mu)
    if not (math.isfinite(sd_f) and math.isfinite(mu_f)):
        raise InputError(f"noiseless tilt {t} contains NaN or Inf values")
    if sd_f == 0:
        raise InputError(f"noiseless tilt {t} is constant (std 0); it cannot be standardised")
    return (p - mu) / sd


def apply_noise(
    noiseless: torch.Tensor,
    model: NoiseModel,
    angles_deg: Sequence[float] | np.ndarray,
    seed: int,
    sample_id: int = 0,
    options: NoiseDraw = NoiseDraw(),
) -> dict[str, torch.Tensor]:
    """Make NOISY, CONTENT and/or BASELINE from a noiseless tilt-series.

    Per tilt ``t`` (one tilt at a time, so memory stays a few tilts above the outputs)::

        x = standardise(noiseless[t]) * r[t] + eps_t * sigma[t]
        x = match_mean_std(x, mean[t], std[t])

    NOISY uses the fitted curves at ``angles_deg``; CONTENT the same with
    ``sigma * content_factor``; BASELINE the degree-0 curves. All three share ``eps_t``.

    Parameters
    ----------
    noiseless
        ``(T, H, W)`` tensor; the outputs live on its device.
    model
        The fitted noise model.
    angles_deg
        The ``T`` tilt angles (degrees) of ``noiseless`` (see ``NoiseModel.curves``).
    seed, sample_id
        Key of the noise streams. ``rng="faket"`` uses ``default_rng([sample_id, seed])``
        (:func:`faket_seed`; the reference used ``default_rng(tomogram index)``, which is
        sample ``N`` with seed 0).
    options
        The modalities, the noise draw, CONTENT's factor, the tilt offset (:class:`NoiseDraw`).

    Returns
    -------
    dict[str, torch.Tensor]
        One float32 ``(T, H, W)`` tensor per requested modality, in the requested order.
    """
    x = _check_noiseless(noiseless)
    n, h, w = x.shape
    angles = _as_angle_array(angles_deg)
    if angles.size != n:
        raise InputError(f"noiseless has {n} tilts but {angles.size} angles were given")
    mods = options.check()
    params = _modality_curves(model, angles, mods, options.content_factor)
    dtype = torch.float64 if options.rng == "faket" else torch.float32
    device = x.device
    out = {m: torch.empty((n, h, w), dtype=torch.float32, device=device) for m in mods}
    faket = _faket_tilts(seed, (h, w), sample_id) if options.rng == "faket" else None
    for t in range(n):
        z = _standardised(x[t].to(dtype), t)
        if faket is not None:
            eps = torch.from_numpy(next(faket)).to(device)
        else:
            eps = noise_field((h, w), seed, sample_id, options.tilt_offset + t, device)
        for m in mods:
            r_m, s_m, mean_m, std_m = params[m]
            y = z * float(r_m[t]) + eps * float(s_m[t])
            out[m][t] = match_mean_std(y, float(mean_m[t]), float(std_m[t]))
    return {m: out[m] for m in mods}


# ------------------------------------------------------------------------------ helpers


def _check_noiseless(noiseless: Any) -> torch.Tensor:
    if isinstance(noiseless, np.ndarray):
        noiseless = torch.from_numpy(noiseless)
    if not isinstance(noiseless, torch.Tensor):
        raise InputError(f"noiseless must be a torch tensor, got {type(noiseless).__name__}")
    if noiseless.ndim != 3 or 0 in noiseless.shape:
        shape = tuple(noiseless.shape)
        raise InputError(f"noiseless must be a non-empty (T, H, W) stack, got shape {shape}")
    if noiseless.is_complex():
        raise InputError("noiseless must be real-valued")
    x: torch.Tensor = noiseless
    return x if x.is_floating_point() else x.to(torch.float32)


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


def _as_angle_array(angles_deg: Any) -> np.ndarray:
    try:
        a = np.asarray(angles_deg, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"tilt angles must be numbers, got {angles_deg!r}") from None
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
        raise InputError("tilt angles must be a non-empty 1-D sequence of finite numbers")
    return a


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


def _check_shape_hw(shape_hw: Any) -> tuple[int, int]:
    try:
        h, w = (operator.index(v) for v in shape_hw)
    except (TypeError, ValueError):
        raise InputError(f"shape_hw must be two integers (H, W), got {shape_hw!r}") from None
    if h <= 0 or w <= 0:
        raise InputError(f"shape_hw must be positive, got {(h, w)}")
    return h, w


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def _fmt(values: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:limit])
    return shown + (f", ... ({values.size} in all)" if values.size > limit else "")
