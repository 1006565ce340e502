"""FakET's neural style transfer: one Adam step on VGG-19 losses, batched over tilts.

The reference (FakET spec §1.5) runs crowsonkb's style transfer with a single scale, a single
iteration and an EMA of the iterates. Written out, for one tilt with the normalised init
``x0`` replicated to 3 channels and ``g`` the gradient of the loss at ``x0``::

    x1  = clamp(x0 - 0.15 * g / (|g| + 1e-8), 0, 1)        # Adam's first step (lr 0.15)
    out = mean_c clamp(w0 * x0 + w1 * x1, 0, 1)              # bias-corrected EMA, decay 0.99

with ``w0 = d(1-d) / (d(1-d) + (1-d)) = 0.497487`` and ``w1 = (1-d) / (d(1-d) + (1-d)) =
0.502513``. The loss is ``content + sum_l w_l * style_l``: content is the scaled MSE
``sum((a-b)^2) / (sum|a-b| + 1e-8)`` of relu2_2 features (image vs. content tilt), style the
scaled MSE of Gram matrices ``F F^T / (H W)`` (image vs. style tilt) at relu1_1, relu2_1,
relu3_1, relu4_1 and relu5_1 with weights 256:64:16:4:1 normalised to sum 1.

Differences from the reference, all deliberate:

* Tilts run in batches. Every loss is a sum over one tilt's elements, computed tilt by tilt,
  so a tilt's gradient does not depend on its batch-mates (see the tests for how exactly).
* Non-square tilts work (the reference crashes on them, spec §8.1). Style tilts may have a
  different size from the content tilts (Gram matrices do not depend on it); unlike the
  reference they are not resized.
* The stacks' min/max can be given (``ranges``), so that a caller holding a part of a stack
  normalises it with the whole stack's range, as the reference does.
* ``precision`` selects fp32 (exact), TF32 or bf16 convolutions; an out-of-memory batch is
  split in halves and retried.

Speed and memory paths (docs/performance.md has the measurements): the batch and tile choice
(:mod:`.memory`), the exact tiled gradient (:mod:`.tiled`), ``channels_last`` and
``cudnn_benchmark`` (default: on for CUDA, off on the CPU), bf16 activations (:mod:`.losses`).

Fault injection (tests): with ``FAKET_DASK_FAULT_OOM_BATCH_ABOVE=N`` in the environment, a
batch of more than ``N`` tilts raises ``torch.OutOfMemoryError`` where its GPU work would
start, so the back-off runs on any device.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from faket_dask.errors import InputError
from faket_dask.stages._stats import match_mean_std
from faket_dask.stages.style.losses import (
    ADAM_EPS,
    AVG_DECAY,
    MIN_SIZE,
    STEP_SIZE,
    activations,
    check_precision,
    cudnn_benchmark_mode,
    ema_weights,
    gram,
    loss_gradient,
    normalize,
    precision_mode,
)
from faket_dask.stages.style.memory import free_device_bytes, pick_batch_size, pick_tile
from faket_dask.stages.style.tiled import (
    TILE_ALIGN,
    default_halo,
    loss_gradient_tiled,
    tile_spans,
    tiled_sums,
)
from faket_dask.stages.style.vgg import STYLE_LAYERS, VGG19Features

__all__ = [
    "ENV_FAULT_OOM",
    "GramCache",
    "StyleRun",
    "style_grams",
    "style_step",
    "style_transfer",
]

log = logging.getLogger(__name__)

ENV_FAULT_OOM = "FAKET_DASK_FAULT_OOM_BATCH_ABOVE"


# --------------------------------------------------------------------------- one step


def _chunk(device: torch.device, n: int) -> int:
    """Tilts per network pass: all of them on a GPU, one at a time on the CPU.

    On the CPU, oneDNN picks convolution algorithms by batch size, so a batched pass rounds
    differently from single tilts (and FakET's step amplifies that, see ``vgg.py``); one tilt
    at a time costs no speed there and makes the result independent of the batch size.
    """
    return max(n, 1) if device.type != "cpu" else 1


def style_grams(
    model: VGG19Features,
    style_norm: torch.Tensor,
    precision: str = "fp32",
    *,
    tile: int | None = None,
    channels_last: bool = False,
) -> list[torch.Tensor]:
    """Gram matrices of normalised style tilts (B, H, W) at relu1_1..relu5_1, each (B, C, C).

    With ``tile`` the matrices are summed over tile cores (windows with the exact halo), so
    memory is bounded by one window; equal to the untiled matrices up to float rounding.
    """
    step = _chunk(style_norm.device, style_norm.shape[0])
    parts: list[list[torch.Tensor]] = []
    with precision_mode(precision), torch.no_grad():
        for s in range(0, style_norm.shape[0], step):
            batch = style_norm[s : s + step, None]
            if tile is not None:
                sums = tiled_sums(
                    model, batch, None, tile, default_halo(), precision, channels_last
                )
                parts.append(sums.grams)
                continue
            feats = activations(model, batch, STYLE_LAYERS, precision, channels_last)
            parts.append([gram(feats[layer]) for layer in STYLE_LAYERS])
            del feats
    return [torch.cat(per_layer) for per_layer in zip(*parts, strict=True)]


def style_step(
    content_norm: torch.Tensor,
    init_norm: torch.Tensor,
    style_grams: Sequence[torch.Tensor],
    model: VGG19Features,
    precision: str = "fp32",
    *,
    tile: int | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """FakET's one-step style transfer of a batch of normalised tilts; returns (B, H, W).

    Parameters
    ----------
    content_norm, init_norm
        (B, H, W) tilts in [0, 1] (already min-max normalised), on the model's device.
    style_grams
        Per style layer, the (B, C, C) Gram matrices of the style tilts paired with them.
    model
        The VGG-19 feature extractor (eval mode, no parameter gradients).
    precision
        ``'fp32'``, ``'tf32'`` or ``'bf16'``.
    tile
        Tile core size (a multiple of 16) for the exact two-pass tiled gradient; ``None``
        runs whole tilts.
    channels_last
        Run the network in NHWC memory format (faster convolutions on tensor-core GPUs).

    Returns
    -------
    torch.Tensor
        The channel mean of the clamped EMA of ``x0`` and ``x1`` (see the module docstring),
        still in normalised units.
    """
    n = init_norm.shape[0]
    step = _chunk(init_norm.device, n)
    halo = default_halo()
    if tile is not None:
        tile_spans(1, tile, halo)  # validates
    with precision_mode(precision), torch.inference_mode(False):
        # The optimised image stays 3-channel: each channel gets its own gradient (vgg.py).
        x0 = init_norm.detach()[:, None].expand(-1, 3, -1, -1).to(torch.float32, copy=True)
        g = torch.empty_like(x0)
        for s in range(0, n, step):
            sl = slice(s, s + step)
            batch_grams = [m[sl] for m in style_grams]
            if tile is not None:
                g[sl] = loss_gradient_tiled(
                    model,
                    content_norm[sl],
                    x0[sl],
                    batch_grams,
                    precision,
                    tile,
                    halo,
                    channels_last,
                )
            else:
                g[sl] = loss_gradient(
                    model, content_norm[sl], x0[sl], batch_grams, precision, channels_last
                )
    x1 = (x0 - STEP_SIZE * g / (g.abs() + ADAM_EPS)).clamp_(0.0, 1.0)
    w0, w1 = ema_weights(AVG_DECAY)
    return (w0 * x0 + w1 * x1).clamp_(0.0, 1.0).mean(dim=1)


# --------------------------------------------------------------------------- Gram cache


class GramCache:
    """Per-process LRU cache of one style tilt's Gram matrices (a list of five (C, C) tensors).

    Keys are built by :func:`style_transfer` from the style tilt's identity (``style_key`` and
    its index, or a checksum of its bytes), the style stack's normalisation range, the
    precision, the model's ``weights_id`` and the device, so a worker computes each style
    tilt's matrices once and reuses them for every sample styled with it. Thread-safe. An
    entry holds about 2.4 MB (fp32); ``max_bytes`` bounds the total.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = int(max_bytes)
        self._data: OrderedDict[Hashable, list[torch.Tensor]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _size(grams: Sequence[torch.Tensor]) -> int:
        return sum(g.numel() * g.element_size() for g in grams)

    def get(self, key: Hashable) -> list[torch.Tensor] | None:
        """Return the cached matrices for ``key`` (and count a hit or a miss)."""
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, grams: Sequence[torch.Tensor]) -> None:
        """Store ``grams`` under ``key``, evicting the least recently used entries if needed."""
        value = [g.detach() for g in grams]
        size = self._size(value)
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= self._size(old)
            if size > self.max_bytes:
                return
            self._data[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= self._size(evicted)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached tensors."""
        return self._bytes


def _checksum(x: torch.Tensor) -> str:
    """BLAKE2b of a tensor's shape, dtype and raw bytes."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((tuple(x.shape), str(x.dtype))).encode())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- whole stacks


@dataclass(frozen=True)
class _Ranges:
    content: tuple[float, float]
    style: tuple[float, float]
    init: tuple[float, float]


def _as_stack(x: Any, name: str) -> tuple[torch.Tensor, tuple[float, float]]:
    """Validate one stack; return it as float32 with its global (min, max)."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError) as err:
            raise InputError(f"{name} must be a (T, H, W) array: {err}") from None
    if x.ndim != 3:
        raise InputError(f"{name} must be a (T, H, W) stack, got shape {tuple(x.shape)}")
    if x.is_complex() or x.dtype == torch.bool:
        raise InputError(f"{name} must hold real numbers, got {x.dtype}")
    x = x.to(torch.float32)
    h, w = x.shape[-2:]
    if min(h, w) < MIN_SIZE:
        raise InputError(
            f"{name} tilts are {h}x{w}; VGG-19 needs at least {MIN_SIZE}x{MIN_SIZE} pixels"
        )
    lo = x.amin(dim=(-2, -1))
    hi = x.amax(dim=(-2, -1))
    if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
        raise InputError(f"{name} holds NaN or infinite values")
    flat = (hi == lo).nonzero().flatten().tolist()
    if flat:
        raise InputError(f"{name} tilt {flat[0]} is constant; style transfer needs contrast")
    return x, (float(lo.min()), float(hi.max()))


def _resolve_ranges(
    local_ranges: Mapping[str, tuple[float, float]], ranges: Mapping[str, Sequence[float]] | None
) -> _Ranges:
    out: dict[str, tuple[float, float]] = {}
    for name, local in local_ranges.items():
        if ranges is None:
            out[name] = local
            continue
        if name not in ranges:
            raise InputError(f"ranges must give (min, max) for content, style and init: no {name}")
        try:
            lo, hi = (float(v) for v in ranges[name])
        except (TypeError, ValueError):
            raise InputError(f"ranges[{name!r}] must be a (min, max) pair") from None
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise InputError(f"ranges[{name!r}] = ({lo}, {hi}) must be finite with min < max")
        if local[0] < lo or local[1] > hi:
            raise InputError(
                f"{name} values span [{local[0]}, {local[1]}], outside the given range "
                f"[{lo}, {hi}]: pass the whole stack's min and max"
            )
        out[name] = (lo, hi)
    return _Ranges(**out)


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _match_per_batch(device: torch.device) -> bool:
    """Match each batch's statistics on the device (GPU), or the whole stack at the end (CPU)."""
    return device.type != "cpu"


def _inject_oom(n: int) -> None:
    """Fault-injection hook: raise a real OOM for batches above ``$FAKET_DASK_FAULT_OOM_...``."""
    limit = os.environ.get(ENV_FAULT_OOM)
    if limit is not None and limit.strip() and n > int(limit):
        raise torch.OutOfMemoryError(
            f"injected by {ENV_FAULT_OOM}={limit}: a batch of {n} tilts is over the limit"
        )


@dataclass(frozen=True)
class StyleRun:
    """How :func:`style_transfer` runs: speed, memory and rounding, never the algorithm.

    Attributes
    ----------
    precision
        ``'fp32'`` (exact), ``'tf32'`` or ``'bf16'`` (see :func:`precision_mode`).
    batch_size
        Tilts per batch, or ``'auto'`` (:func:`pick_batch_size`: from free CUDA memory, or
        :data:`CPU_BATCH_SIZE` on the CPU). On ``torch.OutOfMemoryError`` the batch is halved
        and retried, down to one tilt (then the error is raised); later batches keep the
        smaller size.
    tile
        Tile core size (a multiple of 16) for the exact two-pass tiled gradient, which bounds
        memory by one ``(tile + 160)^2`` window instead of the whole tilt (equal to the
        untiled result up to float rounding; about 1.1-1.6x the work). ``'auto'``:
        :func:`pick_tile` from free CUDA memory (``None`` on the CPU). Default: whole tilts.
    channels_last, cudnn_benchmark
        NHWC activations and cuDNN autotuning; ``None`` means on for CUDA, off otherwise.
        Both change only the rounding.
    memory_limit
        Bytes the ``'auto'`` choices may plan for (at most the free CUDA memory); e.g. to
        leave room for other work on the GPU.
    """

    precision: str = "fp32"
    batch_size: int | Literal["auto"] = 4
    tile: int | Literal["auto"] | None = None
    channels_last: bool | None = None
    cudnn_benchmark: bool | None = None
    memory_limit: int | None = None

    def check(self) -> None:
        """Raise :class:`InputError` for a precision, batch size or tile that cannot work."""
        check_precision(self.precision)
        bs = self.batch_size
        if bs != "auto" and (isinstance(bs, bool) or not isinstance(bs, int) or bs < 1):
            raise InputError(f"batch_size must be a positive integer or 'auto', got {bs!r}")
        tile = self.tile
        if tile is not None and tile != "auto":
            if isinstance(tile, bool) or not isinstance(tile, int):
                raise InputError(
                    f"tile must be a multiple of {TILE_ALIGN}, 'auto' or None: {tile!r}"
                )
            tile_spans(1, tile, default_halo())


@dataclass(frozen=True)
class _Plan:
    """The choices of one :func:`style_transfer` call, resolved for its device and tilt size."""

    device: torch.device
    precision: str
    batch_size: int
    tile: int | None
    channels_last: bool
    cudnn_benchmark: bool


def _plan(options: StyleRun, device: torch.device, n_tilts: int, hw: tuple[int, int]) -> _Plan:
    """Resolve ``'auto'`` and ``None`` choices for ``n_tilts`` tilts of ``hw`` on ``device``."""
    cuda = device.type == "cuda"
    h, w = hw
    free = free_device_bytes(device)
    if free is not None and options.memory_limit is not None:
        free = min(free, int(options.memory_limit))
    tile = pick_tile(h, w, options.precision, free) if options.tile == "auto" else options.tile
    if isinstance(options.batch_size, int):
        batch_size = options.batch_size
    else:  # 'auto'
        batch_size = pick_batch_size(h, w, options.precision, free, device=device, tile=tile)
        n_batches = max(1, -(-n_tilts // batch_size))
        batch_size = max(1, -(-n_tilts // n_batches))  # balanced: 61 = 21 + 21 + 19
        log.info("style: %d tilts per batch (tile %s)", batch_size, tile)
    return _Plan(
        device=device,
        precision=options.precision,
        batch_size=batch_size,
        tile=tile,
        channels_last=cuda if options.channels_last is None else bool(options.channels_last),
        cudnn_benchmark=cuda if options.cudnn_benchmark is None else bool(options.cudnn_benchmark),
    )


def _batch_grams(
    model: VGG19Features,
    style: torch.Tensor,
    idx: range,
    r: tuple[float, float],
    plan: _Plan,
    cache: GramCache | None,
    tilt_ids: Sequence[str] | None,
) -> list[torch.Tensor]:
    """Gram matrices (per layer, (B, C, C)) of the style tilts ``idx``, from the cache if any."""
    precision, device = plan.precision, plan.device

    def grams_of(tilts: torch.Tensor) -> list[torch.Tensor]:
        return style_grams(
            model, normalize(tilts, *r), precision, tile=plan.tile, channels_last=plan.channels_last
        )

    if cache is None or tilt_ids is None:
        return grams_of(style[idx.start : idx.stop].to(device))
    weights_id = getattr(model, "weights_id", None) or str(id(model))
    # Tiling and the memory format change the matrices' rounding: they are part of the key.
    tiled = plan.tile is not None or plan.channels_last
    variant = (plan.tile, plan.channels_last) if tiled else None
    keys = [(tilt_ids[t], r, precision, weights_id, str(device), variant) for t in idx]
    per_tilt: list[list[torch.Tensor] | None] = [cache.get(k) for k in keys]
    missing = [j for j, v in enumerate(per_tilt) if v is None]
    if missing:
        fresh = grams_of(torch.stack([style[idx[j]] for j in missing]).to(device))
        for n, j in enumerate(missing):
            entry = [g[n].clone() for g in fresh]  # not views of the batch
            per_tilt[j] = entry
            cache.put(keys[j], entry)
    return [
        torch.stack([v[layer] for v in per_tilt if v is not None])
        for layer in range(len(STYLE_LAYERS))
    ]


@dataclass(frozen=True)
class _Stacks:
    """The validated float32 stacks of one call, their normalisation ranges and style ids."""

    content: torch.Tensor
    style: torch.Tensor
    init: torch.Tensor
    ranges: _Ranges
    tilt_ids: list[str] | None


def _stacks(
    content: torch.Tensor | np.ndarray,
    style: torch.Tensor | np.ndarray,
    init: torch.Tensor | np.ndarray,
    ranges: Mapping[str, Sequence[float]] | None,
    tilt_ids: Callable[[torch.Tensor], list[str] | None],
) -> _Stacks:
    """Validate the three stacks against each other and resolve their ranges."""
    content, content_range = _as_stack(content, "content")
    style, style_range = _as_stack(style, "style")
    init, init_range = _as_stack(init, "init")
    if not (content.shape[0] == style.shape[0] == init.shape[0]):
        raise InputError(
            f"content, style and init need the same number of tilts, got "
            f"{content.shape[0]}, {style.shape[0]} and {init.shape[0]}"
        )
    if init.shape != content.shape:
        raise InputError(
            f"init {tuple(init.shape)} and content {tuple(content.shape)} must have one shape"
        )
    r = _resolve_ranges(
        {"content": content_range, "style": style_range, "init": init_range}, ranges
    )
    return _Stacks(content, style, init, r, tilt_ids(style))


def _style_stats(style: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(std, mean)`` of each raw style tilt, (T,) float64, one tilt at a time on ``device``.

    On the model's device: for stacks held in host memory the GPU does it in a fraction of the
    CPU's time.
    """
    stats = [
        torch.std_mean(t.to(device=device, dtype=torch.float64), dim=None, correction=0)
        for t in style
    ]
    std = torch.tensor([float(sd) for sd, _ in stats], dtype=torch.float64)
    mean = torch.tensor([float(m) for _, m in stats], dtype=torch.float64)
    return std, mean


def _style_batch(
    model: VGG19Features,
    stacks: _Stacks,
    idx: range,
    plan: _Plan,
    gram_cache: GramCache | None,
    target: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    """Style tilts ``idx``; with ``target`` (their ``(std, mean)``) matched on the device."""
    start, stop = idx.start, idx.stop
    r = stacks.ranges
    cudnn = cudnn_benchmark_mode(plan.cudnn_benchmark) if plan.device.type == "cuda" else None
    with cudnn or contextlib.nullcontext():
        grams = _batch_grams(model, stacks.style, idx, r.style, plan, gram_cache, stacks.tilt_ids)
        c = normalize(stacks.content[start:stop].to(plan.device), *r.content)
        x = normalize(stacks.init[start:stop].to(plan.device), *r.init)
        y = style_step(
            c, x, grams, model, plan.precision, tile=plan.tile, channels_last=plan.channels_last
        )
        if target is not None:
            std, mean = target
            y = match_mean_std(y, mean[start:stop], std[start:stop])
    return y


def style_transfer(
    content: torch.Tensor | np.ndarray,
    style: torch.Tensor | np.ndarray,
    init: torch.Tensor | np.ndarray,
    model: VGG19Features,
    options: StyleRun = StyleRun(),
    *,
    ranges: Mapping[str, Sequence[float]] | None = None,
    gram_cache: GramCache | None = None,
    style_key: str | None = None,
) -> torch.Tensor:
    """FakET's style transfer of whole tilt stacks (FAKET modality); returns (T, H, W) float32.

    Parameters
    ----------
    content, init
        (T, H, W) CONTENT and NOISY stacks (raw values), same shape.
    style
        (T, H', W') raw style stack; tilt ``i`` styles tilt ``i``. It may have another size.
    model
        :class:`~.vgg.VGG19Features`; the work runs on its device, tilts are moved
        there a batch at a time and the result returns to ``content``'s device.
    options
        Precision, batch size, tiling, memory format (:class:`StyleRun`).
    ranges
        ``{'content': (min, max), 'style': ..., 'init': ...}``: the whole stacks' ranges, for a
        caller holding only some of the tilts. Default: the ranges of the given stacks.
    gram_cache, style_key
        Reuse style Gram matrices across calls (keyed by style tilt, the style range, the
        precision, the model's ``weights_id`` and the device). ``style_key`` names the style
        stack *as passed*, its tilt ``i`` becoming ``f"{style_key}#{i}"``: give a part of a
        stack a key of its own. Without it each style tilt is identified by a BLAKE2b checksum
        of its bytes (about 1 GB/s of hashing per call).

    Returns
    -------
    torch.Tensor
        Styled tilts, each matched (std, then mean) to the raw style tilt with its index.
    """
    options.check()

    def tilt_ids(style: torch.Tensor) -> list[str] | None:
        if gram_cache is None:
            return None
        if style_key is not None:
            return [f"{style_key}#{t}" for t in range(style.shape[0])]
        return [_checksum(t) for t in style]

    stacks = _stacks(content, style, init, ranges, tilt_ids)
    device = _model_device(model)
    n_tilts = stacks.content.shape[0]
    h, w = stacks.content.shape[-2:]
    plan = _plan(options, device, n_tilts, (int(h), int(w)))
    std, mean = _style_stats(stacks.style, device)
    # On a GPU each batch is matched there before it goes back; on the CPU the whole stack is
    # matched at the end (the reference's order, bit for bit).
    match_batches = _match_per_batch(device)
    target = (std, mean) if match_batches else None
    out = torch.empty(stacks.content.shape, dtype=torch.float32, device=stacks.content.device)
    start, size = 0, plan.batch_size
    while start < n_tilts:
        n = min(size, n_tilts - start)
        try:
            _inject_oom(n)
            y = _style_batch(model, stacks, range(start, start + n), plan, gram_cache, target)
            out[start : start + n] = y.to(out.device)
        except torch.OutOfMemoryError:
            if n == 1:
                raise
            size = n // 2
        else:
            start += n
            continue
        # Out of the except block, so the failed batch's tensors are no longer referenced.
        log.warning("out of memory on a batch of %d tilts; retrying in batches of %d", n, size)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    return out if match_batches else match_mean_std(out, mean, std)
