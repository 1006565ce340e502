"""The exact two-pass tiled gradient that bounds memory at large tilts (3500²).

Every loss term is a function of sums over pixels (the Gram matrices, the scaled-MSE
normalisers ``sum (a-b)^2`` and ``sum |a-b|``). Pass 1 (:func:`tiled_sums`) accumulates those
sums tile by tile without autograd; from them the loss gradient with respect to each feature map
is local: ``dL/dF_l = w_l (D_l + D_l^T) F_l / (H_l W_l)`` with ``D_l`` the (C, C) gradient of the
style loss with respect to the Gram matrix, and ``2 d / S - N / S^2 sign(d)`` for the content
features (``d = a - b``, ``N = sum d^2``, ``S = sum |d| + 1e-8``). Pass 2
(:func:`loss_gradient_tiled`) recomputes each tile's activations with autograd and
back-propagates that gradient from the tile's *core* feature positions (the cores partition
every layer's positions) into the tile's window, and the windows' input gradients are summed.
A core's features equal the untiled ones when the window adds a halo of at least the receptive
margin (70 px for relu5_1, :func:`receptive_margin`), and tiles start at multiples of 16 so that
the four 2x2 max-pools see the same windows as in the whole tilt. In float64 the tiled gradient
equals the untiled one to 1e-15 of its std (tested). In fp32 they differ by rounding, which the
step can magnify like any other change of rounding (TF32, batch size, channels-last):
``sign(d)`` flips where a Gram entry equals the style's to rounding level.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from faket_dask.errors import InputError
from faket_dask.stages.style.losses import (
    ALL_LAYERS,
    CONTENT_WEIGHT,
    STYLE_LAYER_WEIGHTS,
    activations,
    scaled_mse_grad,
    upcast,
)
from faket_dask.stages.style.vgg import (
    CFG,
    CONTENT_LAYER,
    NUM_LAYERS,
    STYLE_LAYERS,
    VGG19Features,
)

__all__ = [
    "GEOMETRY",
    "TILE_ALIGN",
    "default_halo",
    "layer_geometry",
    "loss_gradient_tiled",
    "receptive_margin",
    "tile_spans",
    "tiled_sums",
]

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
    for v in CFG:
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


GEOMETRY = layer_geometry()


def receptive_margin(layers: Sequence[int] = ALL_LAYERS) -> int:
    """Largest receptive margin (px) of ``layers``: 70 for relu5_1 (a 156 px field)."""
    return max(GEOMETRY[layer][1] for layer in layers)


def default_halo(layers: Sequence[int] = ALL_LAYERS) -> int:
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


# --------------------------------------------------------------------------- the two passes


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
    s = GEOMETRY[layer][0]
    (c0, c1, w0, _), (d0, d1, v0, _) = ys, xs
    # Window starts are multiples of 16, so every layer's grid lines up with the whole tilt's.
    return feats[:, :, (c0 - w0) // s : (c1 - w0) // s, (d0 - v0) // s : (d1 - v0) // s]


def tiled_sums(
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
    layers = STYLE_LAYERS if content is None else ALL_LAYERS
    acc = upcast(image[:0]).dtype
    sums = [
        image.new_zeros((b, GEOMETRY[layer][2], GEOMETRY[layer][2]), dtype=acc)
        for layer in STYLE_LAYERS
    ]
    sq = image.new_zeros(b, dtype=acc)
    ab = image.new_zeros(b, dtype=acc)
    for ys, xs in _tiles(h, w, tile, halo):
        win = (slice(None), slice(None), slice(ys[2], ys[3]), slice(xs[2], xs[3]))
        feats = activations(model, image[win], layers, precision, channels_last)
        for i, layer in enumerate(STYLE_LAYERS):
            core = upcast(_core(feats[layer], layer, ys, xs))
            f = core.reshape(b, core.shape[1], -1)
            sums[i] += torch.bmm(f, f.transpose(1, 2))
        if content is not None:
            target = activations(model, content[win], (CONTENT_LAYER,), precision, channels_last)
            d = upcast(_core(feats[CONTENT_LAYER], CONTENT_LAYER, ys, xs)) - upcast(
                _core(target[CONTENT_LAYER], CONTENT_LAYER, ys, xs)
            )
            sq += d.pow(2).sum(dim=(1, 2, 3))
            ab += d.abs().sum(dim=(1, 2, 3))
        del feats
    grams = []
    for layer, total in zip(STYLE_LAYERS, sums, strict=True):
        s = GEOMETRY[layer][0]
        grams.append(total / ((h // s) * (w // s)))
    return _Sums(grams, sq if content is not None else None, ab if content is not None else None)


def loss_gradient_tiled(
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
        sums = tiled_sums(model, x0, content, tile, halo, precision, channels_last)
        assert sums.sq is not None and sums.ab is not None
        factors = []  # dL/dF_l = K_l F_l per pixel, K_l (B, C, C)
        for layer, weight, g_img, g_sty in zip(
            STYLE_LAYERS, STYLE_LAYER_WEIGHTS, sums.grams, grams, strict=True
        ):
            diff = g_img - g_sty.to(g_img.dtype)
            d_gram = scaled_mse_grad(diff, diff.pow(2).sum(dim=(1, 2)), diff.abs().sum(dim=(1, 2)))
            s = GEOMETRY[layer][0]
            factors.append(weight * (d_gram + d_gram.transpose(1, 2)) / ((h // s) * (w // s)))
    g = torch.zeros_like(x0)
    for ys, xs in _tiles(h, w, tile, halo):
        win = (slice(None), slice(None), slice(ys[2], ys[3]), slice(xs[2], xs[3]))
        with torch.no_grad():
            target = activations(model, content[win], (CONTENT_LAYER,), precision, channels_last)
            t_core = upcast(_core(target[CONTENT_LAYER], CONTENT_LAYER, ys, xs))
        with torch.enable_grad():
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            x = x0[win].clone(memory_format=fmt).requires_grad_(True)
            feats = activations(model, x, ALL_LAYERS, precision, channels_last)
            outputs, grads = [], []
            core = _core(feats[CONTENT_LAYER], CONTENT_LAYER, ys, xs)
            d = upcast(core.detach()) - t_core
            outputs.append(core)
            grads.append((CONTENT_WEIGHT * scaled_mse_grad(d, sums.sq, sums.ab)).to(core.dtype))
            for layer, k in zip(STYLE_LAYERS, factors, strict=True):
                core = _core(feats[layer], layer, ys, xs)
                f = upcast(core.detach())
                grads.append(torch.einsum("bcd,bdhw->bchw", k, f).to(core.dtype))
                outputs.append(core)
            (gw,) = torch.autograd.grad(outputs, x, grads)
        g[win] += gw
        del feats, outputs, grads, x, gw
    return g
