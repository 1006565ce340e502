"""The loss of FakET's step and the network pass it is computed from.

Constants of the reference (FakET spec §1.5): one Adam step of size 0.15 on
``content + sum_l w_l * style_l`` and a bias-corrected EMA of the iterates (:func:`ema_weights`).
Content is the scaled MSE ``sum((a-b)^2) / (sum|a-b| + 1e-8)`` (:func:`scaled_mse`) of relu2_2
features, style the scaled MSE of Gram matrices ``F F^T / (H W)`` (:func:`gram`) at relu1_1,
relu2_1, relu3_1, relu4_1 and relu5_1 with weights 256:64:16:4:1 normalised to sum 1. Every
loss is a sum over one tilt's elements, computed tilt by tilt (:func:`total_loss`).

``precision`` selects fp32 (exact), TF32 or bf16 convolutions (:func:`precision_mode`). bf16
keeps the saved activations in bf16: Gram matrices and losses are computed in fp32 from a
transient upcast (:class:`_LowPrecisionGram`), not from saved fp32 copies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from faket_dask.errors import InputError
from faket_dask.stages.style.vgg import CONTENT_LAYER, STYLE_LAYERS, VGG19Features, min_size

__all__ = [
    "ADAM_EPS",
    "ALL_LAYERS",
    "AVG_DECAY",
    "CONTENT_WEIGHT",
    "LOSS_EPS",
    "MIN_SIZE",
    "PRECISIONS",
    "STEP_SIZE",
    "STYLE_LAYER_WEIGHTS",
    "activations",
    "check_precision",
    "cudnn_benchmark_mode",
    "ema_weights",
    "gram",
    "is_channels_last",
    "loss_gradient",
    "minmax",
    "normalize",
    "precision_mode",
    "scaled_mse",
    "scaled_mse_grad",
    "total_loss",
    "upcast",
]

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

ALL_LAYERS = tuple(sorted((*STYLE_LAYERS, CONTENT_LAYER)))
MIN_SIZE = min_size(ALL_LAYERS)


def ema_weights(decay: float = AVG_DECAY) -> tuple[float, float]:
    """Weights of ``x0`` and ``x1`` in the bias-corrected EMA after one update.

    The EMA starts at ``(1-d) x0`` and is updated once to ``d (1-d) x0 + (1-d) x1``; the bias
    correction divides by the sum of the weights, ``d (1-d) + (1-d)``.
    """
    w0 = decay * (1.0 - decay)
    w1 = 1.0 - decay
    return w0 / (w0 + w1), w1 / (w0 + w1)


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
    check_precision(precision)
    matmul = torch.backends.cuda.matmul
    saved = (matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    tf32 = precision == "tf32"
    matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def check_precision(precision: str) -> None:
    """Raise :class:`InputError` unless ``precision`` is one of :data:`PRECISIONS`."""
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


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is a 4-D tensor stored NHWC (and not also plain contiguous)."""
    return (
        x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    )


def activations(
    model: VGG19Features,
    x: torch.Tensor,
    layers: Sequence[int],
    precision: str,
    channels_last: bool = False,
) -> dict[int, torch.Tensor]:
    """Run the model (under bf16 autocast for ``'bf16'``) and return its activations.

    Activations are fp32, or bf16 for ``'bf16'`` (:func:`gram` and :func:`total_loss` upcast
    them transiently, so autograd keeps only the bf16 tensors). ``channels_last`` runs the
    network on an NHWC copy of ``x`` (a grey tilt is replicated to 3 channels first).
    """
    if channels_last and not is_channels_last(x):
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = x.contiguous(memory_format=torch.channels_last)
    feats: dict[int, torch.Tensor]
    if precision == "bf16":
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            feats = model(x, layers)
    else:
        feats = model(x, layers)
    return feats


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
            if is_channels_last(features):
                nhwc = f32.permute(0, 2, 3, 1).reshape(b, h * w, c)
                out = torch.bmm(nhwc, sym).div_(h * w).reshape(b, h, w, c).permute(0, 3, 1, 2)
            else:
                out = torch.bmm(sym, f32.reshape(b, c, h * w)).div_(h * w).reshape(b, c, h, w)
            return out.to(features.dtype)


def _flat(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H W, C) view for channels-last tensors, else (B, C, H W)."""
    b, c, h, w = features.shape
    if is_channels_last(features):
        return features.permute(0, 2, 3, 1).reshape(b, h * w, c)
    return features.reshape(b, c, h * w)


def _gram_flat(f: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    n = like.shape[-2] * like.shape[-1]
    if is_channels_last(like):
        return torch.bmm(f.transpose(1, 2), f) / n
    return torch.bmm(f, f.transpose(1, 2)) / n


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the accumulation dtype: fp32, or fp64 for fp64 input (exactness tests)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrices ``F F^T / (H W)`` of (B, C, H, W) features, (B, C, C), in fp32 (fp64 in).

    bf16/fp16 features go through :class:`_LowPrecisionGram` (fp32 arithmetic, low-precision
    saved tensors); channels-last features are read as (B, H W, C) without a copy.
    """
    if features.dtype in (torch.bfloat16, torch.float16):
        low: torch.Tensor = _LowPrecisionGram.apply(features)  # type: ignore[no-untyped-call]
        return low
    with torch.autocast(device_type=features.device.type, enabled=False):
        f = upcast(features)
        return _gram_flat(_flat(f), f)


def scaled_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum((a-b)^2) / (sum|a-b| + 1e-8)`` over all elements (one tilt's worth)."""
    diff = a - b
    return diff.pow(2).sum() / (diff.abs().sum() + LOSS_EPS)


def scaled_mse_grad(diff: torch.Tensor, sq: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Gradient of ``sum(d^2) / (sum|d| + eps)`` w.r.t. ``d``, sums given per batch element."""
    den = (ab + LOSS_EPS).view(-1, *([1] * (diff.ndim - 1)))
    num = sq.view_as(den)
    return 2.0 * diff / den - (num / den.square()) * torch.sign(diff)


def total_loss(
    feats: Mapping[int, torch.Tensor], content: torch.Tensor, grams: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Sum over the batch of each tilt's own loss (reductions never mix tilts)."""
    image_grams = [gram(feats[layer]) for layer in STYLE_LAYERS]
    total = feats[CONTENT_LAYER].new_zeros(())
    for i in range(content.shape[0]):
        # upcast is a no-op for fp32; for bf16 an unsaved upcast (the loss runs in fp32).
        loss = CONTENT_WEIGHT * scaled_mse(upcast(feats[CONTENT_LAYER][i]), upcast(content[i]))
        for weight, g_img, g_sty in zip(STYLE_LAYER_WEIGHTS, image_grams, grams, strict=True):
            loss = loss + weight * scaled_mse(g_img[i], g_sty[i])
        total = total + loss
    return total


def loss_gradient(
    model: VGG19Features,
    content_norm: torch.Tensor,
    x0: torch.Tensor,
    grams: Sequence[torch.Tensor],
    precision: str,
    channels_last: bool = False,
) -> torch.Tensor:
    """Gradient of the total loss at ``x0`` (B, 3, H, W), one network pass with autograd."""
    with torch.no_grad():
        content = content_norm[:, None]
        target = activations(model, content, (CONTENT_LAYER,), precision, channels_last)
    with torch.enable_grad():
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = x0.clone(memory_format=fmt).requires_grad_(True)
        feats = activations(model, x, ALL_LAYERS, precision, channels_last)
        loss = total_loss(feats, target[CONTENT_LAYER], grams)
        (g,) = torch.autograd.grad(loss, x)
    return g
