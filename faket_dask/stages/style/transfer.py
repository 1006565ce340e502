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

Speed and memory paths (docs/performance.md has the measurements):

* ``batch_size='auto'`` picks the tilts per batch from free GPU memory and a per-pixel memory
  model (:func:`bytes_per_pixel`, checked against autograd's saved tensors in the tests).
* ``channels_last`` and ``cudnn_benchmark`` (default: on for CUDA, off on the CPU).
* bf16 keeps the saved activations in bf16: Gram matrices and losses are computed in fp32 from
  a transient upcast (:class:`_LowPrecisionGram`), not from saved fp32 copies.
* ``tile``: an exact two-pass tiled gradient that bounds memory at large tilts (3500²).
  Every loss term is a function of sums over pixels (the Gram matrices, the scaled-MSE
  normalisers ``sum (a-b)^2`` and ``sum |a-b|``). Pass 1 accumulates those sums tile by tile
  without autograd; from them the loss gradient with respect to each feature map is local:
  ``dL/dF_l = w_l (D_l + D_l^T) F_l / (H_l W_l)`` with ``D_l`` the (C, C) gradient of the
  style loss with respect to the Gram matrix, and ``2 d / S - N / S^2 sign(d)`` for the
  content features (``d = a - b``, ``N = sum d^2``, ``S = sum |d| + 1e-8``). Pass 2 recomputes
  each tile's activations with autograd and back-propagates that gradient from the tile's
  *core* feature positions (the cores partition every layer's positions) into the tile's
  window, and the windows' input gradients are summed. A core's features equal the untiled
  ones when the window adds a halo of at least the receptive margin (70 px for relu5_1,
  :func:`receptive_margin`), and tiles start at multiples of 16 so that the four 2x2
  max-pools see the same windows as in the whole tilt. In float64 the tiled gradient equals
  the untiled one to 1e-15 of its std (tested). In fp32 they differ by rounding, which the
  step can magnify like any other change of rounding (TF32, batch size, channels-last):
  ``sign(d)`` flips where a Gram entry equals the style's to rounding level.

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
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from faket_dask.errors import InputError
from faket_dask.stages._stats import match_mean_std
from faket_dask.stages.style.vgg import (
    _CFG,
    CONTENT_LAYER,
    NUM_LAYERS,
    STYLE_LAYERS,
    VGG19Features,
    min_size,
)

__all__ = [
    "ADAM_EPS",
    "AVG_DECAY",
    "CONTENT_WEIGHT",
    "ENV_FAULT_OOM",
    "LOSS_EPS",
    "PRECISIONS",
    "STEP_SIZE",
    "STYLE_LAYER_WEIGHTS",
    "TILE_ALIGN",
    "GramCache",
    "bytes_per_pixel",
    "cudnn_benchmark_mode",
    "default_halo",
    "ema_weights",
    "estimate_bytes",
    "free_device_bytes",
    "gram",
    "layer_geometry",
    "minmax",
    "normalize",
    "pick_batch_size",
    "pick_tile",
    "precision_mode",
    "receptive_margin",
    "saved_bytes_per_pixel",
    "scaled_mse",
    "style_grams",
    "style_step",
    "style_transfer",
    "tile_spans",
]

log = logging.getLogger(__name__)

STEP_SIZE = 0.15  # --step-size (Adam lr)
ADAM_EPS = 1e-8  # Adam's default eps
AVG_DECAY = 0.99  # --avg-decay
LOSS_EPS = 1e-8  # ScaledMSELoss eps
CONTENT_WEIGHT = 1.0  # --content-weight 1.0 x normalised content-layer weight 100/100
_RAW_STYLE_WEIGHTS = (256, 64, 16, 4, 1)
STYLE_LAYER_WEIGHTS: tuple[float, ...] = tuple(
    w / sum(_RAW_STYLE_WEIGHTS) for w in _RAW_STYLE_WEIGHTS
)
PRECISIONS = ("fp32", "tf32", "bf16")
ENV_FAULT_OOM = "FAKET_DASK_FAULT_OOM_BATCH_ABOVE"

_ALL_LAYERS = tuple(sorted((*STYLE_LAYERS, CONTENT_LAYER)))
_MIN_SIZE = min_size(_ALL_LAYERS)


def ema_weights(decay: float = AVG_DECAY) -> tuple[float, float]:
    """Weights of ``x0`` and ``x1`` in the bias-corrected EMA after one update.

    The EMA starts at ``(1-d) x0`` and is updated once to ``d (1-d) x0 + (1-d) x1``; the bias
    correction divides by the sum of the weights, ``d (1-d) + (1-d)``.
    """
    w0 = decay * (1.0 - decay)
    w1 = 1.0 - decay
    return w0 / (w0 + w1), w1 / (w0 + w1)


# --------------------------------------------------------------------------- geometry

TILE_ALIGN = 16  # 2**4: four 2x2 max-pools before relu5_1


def layer_geometry() -> dict[int, tuple[int, int, int]]:
    """Per layer index of ``features[:30]``: ``(stride, margin, channels)`` in input pixels.

    Activation position ``q`` of a layer with stride ``s`` and margin ``m`` depends on the
    input pixels ``[s q - m, s q + s - 1 + m]`` (per axis): each 3x3 convolution widens the
    field by one step of its input grid on each side; a 2x2 max-pool doubles the step.
    """
    geo: dict[int, tuple[int, int, int]] = {}
    i, stride, margin, channels = 0, 1, 0, 3
    for v in _CFG:
        if v == "M":
            stride *= 2
            geo[i] = (stride, margin, channels)
            i += 1
        else:
            assert isinstance(v, int)
            margin += stride
            channels = v
            geo[i] = geo[i + 1] = (stride, margin, channels)  # the conv and its ReLU
            i += 2
    return {k: v for k, v in geo.items() if k < NUM_LAYERS}


_GEOMETRY = layer_geometry()


def receptive_margin(layers: Sequence[int] = _ALL_LAYERS) -> int:
    """Largest receptive margin (px) of ``layers``: 70 for relu5_1 (a 156 px field)."""
    return max(_GEOMETRY[layer][1] for layer in layers)


def default_halo(layers: Sequence[int] = _ALL_LAYERS) -> int:
    """Smallest exact tile halo: the receptive margin rounded up to :data:`TILE_ALIGN` (80)."""
    return -(-receptive_margin(layers) // TILE_ALIGN) * TILE_ALIGN


def tile_spans(n: int, tile: int, halo: int) -> list[tuple[int, int, int, int]]:
    """Tiles of one axis of length ``n``: ``(core0, core1, window0, window1)`` in pixels.

    Cores ``[k tile, (k+1) tile)`` partition ``[0, n)``; each window adds ``halo`` pixels on
    both sides, clipped to the image (where the padding then matches the untiled pass).
    """
    if tile < 1 or tile % TILE_ALIGN or halo < 0 or halo % TILE_ALIGN:
        raise InputError(
            f"tile ({tile}) must be a positive multiple of {TILE_ALIGN} and halo ({halo}) a "
            f"non-negative one, so that max-pool windows line up with the whole tilt's"
        )
    return [
        (c0, min(n, c0 + tile), max(0, c0 - halo), min(n, c0 + tile + halo))
        for c0 in range(0, n, tile)
    ]


# --------------------------------------------------------------------------- memory model

#: Backward temporaries on top of the saved activations (spec §3: about +25 %).
BACKWARD_TEMP = 0.25
#: Per-pixel bytes of a tilt's inputs, x0, its gradient, the output (fp32), per full tilt.
_STEP_BYTES_PER_PIXEL = 48
#: Weights, cuDNN workspace and allocator slack that do not scale with the batch (bytes).
_FIXED_BYTES = 768 * 1024**2
#: Tilts per batch on the CPU (one tilt per network pass there anyway, see ``_chunk``).
CPU_BATCH_SIZE = 4
#: Largest automatic batch: a 1024² tilt alone keeps a GPU busy; more only costs memory.
_MAX_BATCH = 16


def _cfg_kind() -> dict[int, str]:
    """Per layer index: ``'conv'``, ``'relu'`` or ``'pool'``."""
    kinds: dict[int, str] = {}
    i = 0
    for v in _CFG:
        if v == "M":
            kinds[i] = "pool"
            i += 1
        else:
            kinds[i], kinds[i + 1] = "conv", "relu"
            i += 2
    return kinds


_CFG_KIND = _cfg_kind()


def saved_bytes_per_pixel(precision: str = "fp32") -> float:
    """Bytes per input pixel that autograd saves for the backward pass of one tilt.

    Counted from the layer configuration: every ReLU output and max-pool output (in the
    activation dtype: 4 bytes, 2 for bf16), the normalised 3-channel input (two copies, one
    of them bf16 under autocast) and the fp32 difference of the content loss at relu2_2.
    The max-pools keep no indices (:class:`~.vgg.MaxPool2x2` recomputes them).
    1432 B for fp32 (spec §3 estimated about 1.9 kB; 1672 B with the indices), 786 B for
    bf16. The tests compare it with the storages autograd really holds.
    """
    _check_precision(precision)
    e = 2 if precision == "bf16" else 4
    # The normalised input: two fp32 copies; under autocast one of them is its bf16 cast.
    total = 3 * 4 + (3 * 2 if precision == "bf16" else 3 * 4)
    for idx, (stride, _, channels) in _GEOMETRY.items():
        module = _CFG_KIND[idx]
        if module == "relu" or module == "pool":
            total += e * channels / stride**2
    stride, _, channels = _GEOMETRY[CONTENT_LAYER]
    return total + 4 * channels / stride**2


def bytes_per_pixel(precision: str = "fp32") -> float:
    """Peak bytes per pixel of the network pass with autograd (one tilt, or one tile window).

    The saved activations (:func:`saved_bytes_per_pixel`) plus :data:`BACKWARD_TEMP` for
    the backward pass's gradient buffers, plus the content target at relu2_2.
    """
    stride, _, channels = _GEOMETRY[CONTENT_LAYER]
    target = (2 if precision == "bf16" else 4) * channels / stride**2
    return saved_bytes_per_pixel(precision) * (1.0 + BACKWARD_TEMP) + target


def estimate_bytes(
    height: int,
    width: int,
    precision: str = "fp32",
    batch: int = 1,
    tile: int | None = None,
    halo: int | None = None,
) -> int:
    """Estimated peak device memory (bytes) of styling ``batch`` tilts of ``height x width``.

    With ``tile``, the network runs on one window of at most ``(tile + 2 halo)^2`` pixels at
    a time; the full-size step arrays (inputs, gradient, output) still scale with the tilt.
    """
    window = height * width
    if tile is not None:
        halo = default_halo() if halo is None else halo
        window = min(height, tile + 2 * halo) * min(width, tile + 2 * halo)
    per_tilt = window * bytes_per_pixel(precision) + height * width * _STEP_BYTES_PER_PIXEL
    return int(batch * per_tilt + _FIXED_BYTES)


def free_device_bytes(device: torch.device | str) -> int | None:
    """Free memory of a CUDA device (driver-free plus what torch's allocator holds unused).

    ``None`` for other devices.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free + cached)


def pick_batch_size(
    height: int,
    width: int,
    precision: str = "fp32",
    free_bytes: int | None = None,
    *,
    device: torch.device | str | None = None,
    tile: int | None = None,
    max_batch: int = _MAX_BATCH,
    fraction: float = 0.85,
) -> int:
    """Tilts per batch that fit in ``fraction`` of the free device memory.

    Parameters
    ----------
    height, width
        Tilt size in pixels.
    precision
        ``'fp32'``, ``'tf32'`` (same memory) or ``'bf16'``.
    free_bytes
        Free memory (bytes). ``None``: asked of ``device`` (CUDA), or, on the CPU,
        :data:`CPU_BATCH_SIZE` is returned (the CPU runs one tilt per pass anyway).
    tile
        Tile core size when the tiled gradient is used (memory per window, not per tilt).

    Returns
    -------
    int
        At least 1 (a single tilt that does not fit is left to the OOM back-off or tiling)
        and at most ``max_batch``.
    """
    _check_precision(precision)
    if free_bytes is None:
        free_bytes = free_device_bytes(device) if device is not None else None
        if free_bytes is None:
            return CPU_BATCH_SIZE
    per_tilt = estimate_bytes(height, width, precision, 2, tile) - estimate_bytes(
        height, width, precision, 1, tile
    )
    usable = fraction * free_bytes - _FIXED_BYTES
    return int(max(1, min(max_batch, usable // per_tilt)))


def pick_tile(
    height: int,
    width: int,
    precision: str = "fp32",
    free_bytes: int | None = None,
    *,
    device: torch.device | str | None = None,
    fraction: float = 0.85,
) -> int | None:
    """Tile core size for one tilt to fit in ``fraction`` of the free memory, or ``None``.

    ``None`` when the whole tilt fits (or on the CPU, where memory is not the limit). Else the
    tiles are balanced: as few per axis as fit, all of nearly one size, multiples of 16.
    """
    _check_precision(precision)
    if free_bytes is None:
        free_bytes = free_device_bytes(device) if device is not None else None
        if free_bytes is None:
            return None
    budget = fraction * free_bytes
    if estimate_bytes(height, width, precision) <= budget:
        return None
    longest = max(height, width)
    best = TILE_ALIGN
    for tile in range(longest // TILE_ALIGN * TILE_ALIGN, TILE_ALIGN - 1, -TILE_ALIGN):
        if estimate_bytes(height, width, precision, 1, tile) <= budget:
            best = tile
            break
    n = -(-longest // best)
    balanced = -(-longest // n)
    return -(-balanced // TILE_ALIGN) * TILE_ALIGN


# --------------------------------------------------------------------------- normalisation


def minmax(stack: torch.Tensor | np.ndarray) -> tuple[float, float]:
    """Global ``(min, max)`` of a whole stack, as Python floats."""
    t = torch.as_tensor(stack)
    return float(t.min()), float(t.max())


def normalize(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Min-max scale ``x`` to [0, 1] with a given range, in float32 (as the reference does)."""
    lo_t = torch.tensor(lo, dtype=torch.float32, device=x.device)
    scale = torch.tensor(hi, dtype=torch.float32, device=x.device) - lo_t
    return (x.to(torch.float32) - lo_t) / scale


# --------------------------------------------------------------------------- precision


@contextlib.contextmanager
def precision_mode(precision: str) -> Iterator[None]:
    """Set the CUDA TF32 flags for ``precision`` and restore them afterwards.

    ``'fp32'`` and ``'bf16'`` turn TF32 off for matmuls and cuDNN convolutions (bf16's
    convolutions run under autocast; its Gram matrices and losses stay exact fp32);
    ``'tf32'`` turns it on. The flags are process-wide: one style transfer per process at a
    time (a Dask GPU worker runs one task per GPU thread).
    """
    _check_precision(precision)
    matmul = torch.backends.cuda.matmul
    saved = (matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    tf32 = precision == "tf32"
    matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


@contextlib.contextmanager
def cudnn_benchmark_mode(enabled: bool) -> Iterator[None]:
    """Set ``torch.backends.cudnn.benchmark`` (autotuned convolution algorithms) and restore it.

    Process-wide, like :func:`precision_mode`. It pays off for the fixed tilt shapes of a
    dataset; the first batch of each new shape runs the autotuner.
    """
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def _is_channels_last(x: torch.Tensor) -> bool:
    return (
        x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    )


def _features(
    model: VGG19Features,
    x: torch.Tensor,
    layers: Sequence[int],
    precision: str,
    channels_last: bool = False,
) -> dict[int, torch.Tensor]:
    """Run the model (under bf16 autocast for ``'bf16'``) and return its activations.

    Activations are fp32, or bf16 for ``'bf16'`` (:func:`gram` and :func:`_total_loss` upcast
    them transiently, so autograd keeps only the bf16 tensors). ``channels_last`` runs the
    network on an NHWC copy of ``x`` (a grey tilt is replicated to 3 channels first).
    """
    if channels_last and not _is_channels_last(x):
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = x.contiguous(memory_format=torch.channels_last)
    if precision == "bf16":
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            return model(x, layers)
    return model(x, layers)


# --------------------------------------------------------------------------- losses


class _LowPrecisionGram(torch.autograd.Function):
    """Gram matrices of bf16/fp16 features computed in fp32, saving only the low-precision input.

    Forward: the same fp32 ``bmm`` as :func:`gram` on an upcast copy, which is then dropped.
    Backward: ``(dG + dG^T) F / (H W)`` in fp32 from a fresh upcast, cast to the features'
    dtype (as the ``.float()`` it replaces would). Saves an fp32 copy of every style layer.
    """

    @staticmethod
    def forward(ctx: Any, features: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(features)
        with torch.autocast(device_type=features.device.type, enabled=False):
            f = _flat(features.float())
            return _gram_flat(f, features)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (features,) = ctx.saved_tensors
        b, c, h, w = features.shape
        with torch.autocast(device_type=features.device.type, enabled=False):
            sym = (grad + grad.transpose(1, 2)).to(torch.float32)
            f32 = features.float()
            if _is_channels_last(features):
                nhwc = f32.permute(0, 2, 3, 1).reshape(b, h * w, c)
                out = torch.bmm(nhwc, sym).div_(h * w).reshape(b, h, w, c).permute(0, 3, 1, 2)
            else:
                out = torch.bmm(sym, f32.reshape(b, c, h * w)).div_(h * w).reshape(b, c, h, w)
            return out.to(features.dtype)


def _flat(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H W, C) view for channels-last tensors, else (B, C, H W)."""
    b, c, h, w = features.shape
    if _is_channels_last(features):
        return features.permute(0, 2, 3, 1).reshape(b, h * w, c)
    return features.reshape(b, c, h * w)


def _gram_flat(f: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    n = like.shape[-2] * like.shape[-1]
    if _is_channels_last(like):
        return torch.bmm(f.transpose(1, 2), f) / n
    return torch.bmm(f, f.transpose(1, 2)) / n


def _acc(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the accumulation dtype: fp32, or fp64 for fp64 input (exactness tests)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrices ``F F^T / (H W)`` of (B, C, H, W) features, (B, C, C), in fp32 (fp64 in).

    bf16/fp16 features go through :class:`_LowPrecisionGram` (fp32 arithmetic, low-precision
    saved tensors); channels-last features are read as (B, H W, C) without a copy.
    """
    if features.dtype in (torch.bfloat16, torch.float16):
        return _LowPrecisionGram.apply(features)
    with torch.autocast(device_type=features.device.type, enabled=False):
        f = _acc(features)
        return _gram_flat(_flat(f), f)


def scaled_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum((a-b)^2) / (sum|a-b| + 1e-8)`` over all elements (one tilt's worth)."""
    diff = a - b
    return diff.pow(2).sum() / (diff.abs().sum() + LOSS_EPS)


def _total_loss(
    feats: Mapping[int, torch.Tensor], content: torch.Tensor, grams: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Sum over the batch of each tilt's own loss (reductions never mix tilts)."""
    image_grams = [gram(feats[layer]) for layer in STYLE_LAYERS]
    total = feats[CONTENT_LAYER].new_zeros(())
    for i in range(content.shape[0]):
        # _acc is a no-op for fp32; for bf16 an unsaved upcast (the loss runs in fp32).
        loss = CONTENT_WEIGHT * scaled_mse(_acc(feats[CONTENT_LAYER][i]), _acc(content[i]))
        for weight, g_img, g_sty in zip(STYLE_LAYER_WEIGHTS, image_grams, grams, strict=True):
            loss = loss + weight * scaled_mse(g_img[i], g_sty[i])
        total = total + loss
    return total


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
                sums = _tiled_sums(
                    model, batch, None, tile, default_halo(), precision, channels_last
                )
                parts.append(sums.grams)
                continue
            feats = _features(model, batch, STYLE_LAYERS, precision, channels_last)
            parts.append([gram(feats[layer]) for layer in STYLE_LAYERS])
            del feats
    return [torch.cat(per_layer) for per_layer in zip(*parts, strict=True)]


# --------------------------------------------------------------------------- tiled gradient


@dataclass
class _Sums:
    """Per tilt: Gram matrices (normalised by the whole tilt's H W) and the content sums."""

    grams: list[torch.Tensor]  # per style layer, (B, C, C) fp32
    sq: torch.Tensor | None  # (B,) sum (a - b)^2 at relu2_2
    ab: torch.Tensor | None  # (B,) sum |a - b| at relu2_2


def _tiles(h: int, w: int, tile: int, halo: int) -> Iterator[tuple[tuple[int, ...], ...]]:
    for ys in tile_spans(h, tile, halo):
        for xs in tile_spans(w, tile, halo):
            yield ys, xs


def _core(
    feats: torch.Tensor, layer: int, ys: tuple[int, ...], xs: tuple[int, ...]
) -> torch.Tensor:
    """The core of a tile window's activations at ``layer`` (a view)."""
    s = _GEOMETRY[layer][0]
    (c0, c1, w0, _), (d0, d1, v0, _) = ys, xs
    # Window starts are multiples of 16, so every layer's grid lines up with the whole tilt's.
    return feats[:, :, (c0 - w0) // s : (c1 - w0) // s, (d0 - v0) // s : (d1 - v0) // s]


def _tiled_sums(
    model: VGG19Features,
    image: torch.Tensor,
    content: torch.Tensor | None,
    tile: int,
    halo: int,
    precision: str,
    channels_last: bool,
) -> _Sums:
    """Pass 1: Gram matrices of ``image`` (B, 1|3, H, W) and, with ``content``, the content sums."""
    b, _, h, w = image.shape
    layers = STYLE_LAYERS if content is None else _ALL_LAYERS
    acc = _acc(image[:0]).dtype
    sums = [
        image.new_zeros((b, _GEOMETRY[layer][2], _GEOMETRY[layer][2]), dtype=acc)
        for layer in STYLE_LAYERS
    ]
    sq = image.new_zeros(b, dtype=acc)
    ab = image.new_zeros(b, dtype=acc)
    for ys, xs in _tiles(h, w, tile, halo):
        win = (slice(None), slice(None), slice(ys[2], ys[3]), slice(xs[2], xs[3]))
        feats = _features(model, image[win], layers, precision, channels_last)
        for i, layer in enumerate(STYLE_LAYERS):
            core = _acc(_core(feats[layer], layer, ys, xs))
            f = core.reshape(b, core.shape[1], -1)
            sums[i] += torch.bmm(f, f.transpose(1, 2))
        if content is not None:
            target = _features(model, content[win], (CONTENT_LAYER,), precision, channels_last)
            d = _acc(_core(feats[CONTENT_LAYER], CONTENT_LAYER, ys, xs)) - _acc(
                _core(target[CONTENT_LAYER], CONTENT_LAYER, ys, xs)
            )
            sq += d.pow(2).sum(dim=(1, 2, 3))
            ab += d.abs().sum(dim=(1, 2, 3))
        del feats
    grams = []
    for layer, total in zip(STYLE_LAYERS, sums, strict=True):
        s = _GEOMETRY[layer][0]
        grams.append(total / ((h // s) * (w // s)))
    return _Sums(grams, sq if content is not None else None, ab if content is not None else None)


def _scaled_mse_grad(diff: torch.Tensor, sq: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Gradient of ``sum(d^2) / (sum|d| + eps)`` w.r.t. ``d``, sums given per batch element."""
    den = (ab + LOSS_EPS).view(-1, *([1] * (diff.ndim - 1)))
    num = sq.view_as(den)
    return 2.0 * diff / den - (num / den.square()) * torch.sign(diff)


def _loss_gradient_tiled(
    model: VGG19Features,
    content_norm: torch.Tensor,
    x0: torch.Tensor,
    grams: Sequence[torch.Tensor],
    precision: str,
    tile: int,
    halo: int,
    channels_last: bool = False,
) -> torch.Tensor:
    """Exact gradient of the total loss at ``x0`` (B, 3, H, W), two passes over tiles.

    See the module docstring. ``halo`` below :func:`default_halo` is allowed (for tests) but
    is no longer exact.
    """
    h, w = x0.shape[-2:]
    content = content_norm[:, None]
    with torch.no_grad():
        sums = _tiled_sums(model, x0, content, tile, halo, precision, channels_last)
        assert sums.sq is not None and sums.ab is not None
        factors = []  # dL/dF_l = K_l F_l per pixel, K_l (B, C, C)
        for layer, weight, g_img, g_sty in zip(
            STYLE_LAYERS, STYLE_LAYER_WEIGHTS, sums.grams, grams, strict=True
        ):
            diff = g_img - g_sty.to(g_img.dtype)
            d_gram = _scaled_mse_grad(diff, diff.pow(2).sum(dim=(1, 2)), diff.abs().sum(dim=(1, 2)))
            s = _GEOMETRY[layer][0]
            factors.append(weight * (d_gram + d_gram.transpose(1, 2)) / ((h // s) * (w // s)))
    g = torch.zeros_like(x0)
    for ys, xs in _tiles(h, w, tile, halo):
        win = (slice(None), slice(None), slice(ys[2], ys[3]), slice(xs[2], xs[3]))
        with torch.no_grad():
            target = _features(model, content[win], (CONTENT_LAYER,), precision, channels_last)
            t_core = _acc(_core(target[CONTENT_LAYER], CONTENT_LAYER, ys, xs))
        with torch.enable_grad():
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            x = x0[win].clone(memory_format=fmt).requires_grad_(True)
            feats = _features(model, x, _ALL_LAYERS, precision, channels_last)
            outputs, grads = [], []
            core = _core(feats[CONTENT_LAYER], CONTENT_LAYER, ys, xs)
            d = _acc(core.detach()) - t_core
            outputs.append(core)
            grads.append((CONTENT_WEIGHT * _scaled_mse_grad(d, sums.sq, sums.ab)).to(core.dtype))
            for layer, k in zip(STYLE_LAYERS, factors, strict=True):
                core = _core(feats[layer], layer, ys, xs)
                f = _acc(core.detach())
                grads.append(torch.einsum("bcd,bdhw->bchw", k, f).to(core.dtype))
                outputs.append(core)
            (gw,) = torch.autograd.grad(outputs, x, grads)
        g[win] += gw
        del feats, outputs, grads, x, gw
    return g


def _loss_gradient(
    model: VGG19Features,
    content_norm: torch.Tensor,
    x0: torch.Tensor,
    grams: Sequence[torch.Tensor],
    precision: str,
    channels_last: bool = False,
) -> torch.Tensor:
    """Gradient of the total loss at ``x0`` (B, 3, H, W), one network pass with autograd."""
    with torch.no_grad():
        target = _features(model, content_norm[:, None], (CONTENT_LAYER,), precision, channels_last)
    with torch.enable_grad():
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = x0.clone(memory_format=fmt).requires_grad_(True)
        feats = _features(model, x, _ALL_LAYERS, precision, channels_last)
        loss = _total_loss(feats, target[CONTENT_LAYER], grams)
        (g,) = torch.autograd.grad(loss, x)
    return g


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
                g[sl] = _loss_gradient_tiled(
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
                g[sl] = _loss_gradient(
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
    if min(h, w) < _MIN_SIZE:
        raise InputError(
            f"{name} tilts are {h}x{w}; VGG-19 needs at least {_MIN_SIZE}x{_MIN_SIZE} pixels"
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


def _batch_grams(
    model: VGG19Features,
    style: torch.Tensor,
    idx: range,
    r: tuple[float, float],
    precision: str,
    device: torch.device,
    cache: GramCache | None,
    tilt_ids: Sequence[str] | None,
    tile: int | None = None,
    channels_last: bool = False,
) -> list[torch.Tensor]:
    """Gram matrices (per layer, (B, C, C)) of the style tilts ``idx``, from the cache if any."""
    opts = {"tile": tile, "channels_last": channels_last}
    if cache is None or tilt_ids is None:
        tilts = normalize(style[idx.start : idx.stop].to(device), *r)
        return style_grams(model, tilts, precision, **opts)
    weights_id = getattr(model, "weights_id", None) or str(id(model))
    # Tiling and the memory format change the matrices' rounding: they are part of the key.
    variant = (tile, channels_last) if tile is not None or channels_last else None
    keys = [(tilt_ids[t], r, precision, weights_id, str(device), variant) for t in idx]
    per_tilt: list[list[torch.Tensor] | None] = [cache.get(k) for k in keys]
    missing = [j for j, v in enumerate(per_tilt) if v is None]
    if missing:
        tilts = torch.stack([style[idx[j]] for j in missing]).to(device)
        fresh = style_grams(model, normalize(tilts, *r), precision, **opts)
        for n, j in enumerate(missing):
            per_tilt[j] = [g[n].clone() for g in fresh]  # not views of the batch
            cache.put(keys[j], per_tilt[j])
    return [
        torch.stack([v[layer] for v in per_tilt if v is not None])
        for layer in range(len(STYLE_LAYERS))
    ]


def style_transfer(
    content: torch.Tensor | np.ndarray,
    style: torch.Tensor | np.ndarray,
    init: torch.Tensor | np.ndarray,
    model: VGG19Features,
    *,
    precision: str = "fp32",
    batch_size: int | Literal["auto"] = 4,
    ranges: Mapping[str, Sequence[float]] | None = None,
    gram_cache: GramCache | None = None,
    style_key: str | None = None,
    tile: int | Literal["auto"] | None = None,
    channels_last: bool | None = None,
    cudnn_benchmark: bool | None = None,
    memory_limit: int | None = None,
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
    precision
        ``'fp32'`` (exact), ``'tf32'`` or ``'bf16'`` (see :func:`precision_mode`).
    batch_size
        Tilts per batch, or ``'auto'`` (:func:`pick_batch_size`: from free CUDA memory, or
        :data:`CPU_BATCH_SIZE` on the CPU). On ``torch.OutOfMemoryError`` the batch is halved
        and retried, down to one tilt (then the error is raised); later batches keep the
        smaller size.
    ranges
        ``{'content': (min, max), 'style': ..., 'init': ...}``: the whole stacks' ranges, for a
        caller holding only some of the tilts. Default: the ranges of the given stacks.
    gram_cache, style_key
        Reuse style Gram matrices across calls (keyed by style tilt, the style range, the
        precision, the model's ``weights_id`` and the device). ``style_key`` names the style
        stack *as passed*, its tilt ``i`` becoming ``f"{style_key}#{i}"``: give a part of a
        stack a key of its own. Without it each style tilt is identified by a BLAKE2b checksum
        of its bytes (about 1 GB/s of hashing per call).
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

    Returns
    -------
    torch.Tensor
        Styled tilts, each matched (std, then mean) to the raw style tilt with its index.
    """
    _check_precision(precision)
    if batch_size != "auto" and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise InputError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    if tile is not None and tile != "auto":
        if isinstance(tile, bool) or not isinstance(tile, int):
            raise InputError(f"tile must be a multiple of {TILE_ALIGN}, 'auto' or None: {tile!r}")
        tile_spans(1, tile, default_halo())
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
    device = _model_device(model)
    cuda = device.type == "cuda"
    channels_last = cuda if channels_last is None else bool(channels_last)
    cudnn_benchmark = cuda if cudnn_benchmark is None else bool(cudnn_benchmark)
    h, w = content.shape[-2:]
    free = free_device_bytes(device)
    if free is not None and memory_limit is not None:
        free = min(free, int(memory_limit))
    if tile == "auto":
        tile = pick_tile(h, w, precision, free)
    if batch_size == "auto":
        batch_size = pick_batch_size(h, w, precision, free, device=device, tile=tile)
        n_batches = max(1, -(-content.shape[0] // batch_size))
        batch_size = max(1, -(-content.shape[0] // n_batches))  # balanced: 61 = 21 + 21 + 19
        log.info("style: %d tilts per batch (tile %s)", batch_size, tile)
    tilt_ids = None
    if gram_cache is not None:
        if style_key is not None:
            tilt_ids = [f"{style_key}#{t}" for t in range(style.shape[0])]
        else:
            tilt_ids = [_checksum(t) for t in style]

    # The raw style tilts' statistics, in float64 one tilt at a time (on the model's device:
    # for stacks held in host memory the GPU does it in a fraction of the CPU's time).
    stats = [
        torch.std_mean(t.to(device=device, dtype=torch.float64), dim=None, correction=0)
        for t in style
    ]
    std = torch.tensor([float(sd) for sd, _ in stats], dtype=torch.float64)
    mean = torch.tensor([float(m) for _, m in stats], dtype=torch.float64)
    # On a GPU each batch is matched there before it goes back; on the CPU the whole stack is
    # matched at the end (the reference's order, bit for bit).
    match_batches = _match_per_batch(device)

    n_tilts = content.shape[0]
    out = torch.empty(content.shape, dtype=torch.float32, device=content.device)
    start, size = 0, batch_size
    while start < n_tilts:
        n = min(size, n_tilts - start)
        idx = range(start, start + n)
        try:
            _inject_oom(n)
            with cudnn_benchmark_mode(cudnn_benchmark) if cuda else contextlib.nullcontext():
                grams = _batch_grams(
                    model,
                    style,
                    idx,
                    r.style,
                    precision,
                    device,
                    gram_cache,
                    tilt_ids,
                    tile,
                    channels_last,
                )
                c = normalize(content[start : start + n].to(device), *r.content)
                x = normalize(init[start : start + n].to(device), *r.init)
                y = style_step(
                    c, x, grams, model, precision, tile=tile, channels_last=channels_last
                )
                if match_batches:
                    y = match_mean_std(y, mean[start : start + n], std[start : start + n])
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
