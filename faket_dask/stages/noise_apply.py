"""Draw FakET's noise and apply a fitted noise model to a noiseless tilt-series.

The model itself (fitting, files, curves at given angles) is :mod:`faket_dask.stages.noise`.
Noise is applied tilt by tilt (``apply_noise``, ``faket-spec.md`` §1.4)::

    x = standardise(P[t]) * r[t] + eps[t] * sigma[t]      # CONTENT: sigma[t] * 0.25, same eps
    x = x / std(x) * std[t];  x = x - mean(x) + mean[t]   # match_mean_std

``eps`` comes either from a stream keyed by ``(seed, sample_id, tilt_index)`` (default, any
worker can draw any tilt, on CPU or GPU) or, with ``rng="faket"``, from the reference's own
draw ``np.random.default_rng(seed).normal(size=T*H*W)`` in float64.
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from faket_dask.angles import angle_array
from faket_dask.errors import InputError
from faket_dask.stages._stats import match_mean_std
from faket_dask.stages.noise import CONTENT_FACTOR, MODALITIES, NoiseModel

__all__ = [
    "NoiseDraw",
    "apply_noise",
    "faket_seed",
    "noise_field",
    "stream_key",
]


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
    angles = angle_array(angles_deg)
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


def _check_shape_hw(shape_hw: Any) -> tuple[int, int]:
    try:
        h, w = (operator.index(v) for v in shape_hw)
    except (TypeError, ValueError):
        raise InputError(f"shape_hw must be two integers (H, W), got {shape_hw!r}") from None
    if h <= 0 or w <= 0:
        raise InputError(f"shape_hw must be positive, got {(h, w)}")
    return h, w
