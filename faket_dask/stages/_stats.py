"""Per-image statistics shared by the stages (noise and style both match a target mean/std)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from faket_dask.errors import InputError

__all__ = ["match_mean_std"]


def match_mean_std(
    x: torch.Tensor,
    target_mean: float | Sequence[float] | np.ndarray | torch.Tensor,
    target_std: float | Sequence[float] | np.ndarray | torch.Tensor,
) -> torch.Tensor:
    """Match every image of ``x`` (``(..., H, W)``) to a target mean and std.

    As in the reference: first ``x / std(x) * target_std``, then ``- mean + target_mean``,
    population std over each ``(H, W)`` image. ``target_mean``/``target_std`` have the shape
    of ``x.shape[:-2]`` (e.g. ``(T,)`` for a ``(T, H, W)`` stack, scalars for one image).
    Returns a new tensor of ``x``'s dtype on ``x``'s device.

    Raises
    ------
    InputError
        Wrong target shapes, a target std <= 0 or non-finite, or a constant image.
    """
    if x.ndim < 2 or not x.is_floating_point():
        raise InputError(f"match_mean_std needs a floating (..., H, W) tensor, got {x.shape}")
    lead = tuple(x.shape[:-2])
    tm = torch.as_tensor(target_mean, dtype=x.dtype, device=x.device)
    ts = torch.as_tensor(target_std, dtype=x.dtype, device=x.device)
    if tuple(tm.shape) != lead or tuple(ts.shape) != lead:
        raise InputError(
            f"target mean/std shapes {tuple(tm.shape)}/{tuple(ts.shape)} must equal {lead}"
        )
    ok = torch.all(torch.isfinite(tm)) & torch.all(torch.isfinite(ts) & (ts > 0))
    if not bool(ok):
        raise InputError("target means must be finite and target stds finite and > 0")
    std = torch.std(x, dim=(-2, -1), correction=0, keepdim=True)
    if bool(torch.any(std == 0)):
        raise InputError("cannot match the statistics of a constant image (std 0)")
    y = x / std
    y.mul_(ts[..., None, None])
    y.sub_(y.mean(dim=(-2, -1), keepdim=True)).add_(tm[..., None, None])
    return y
