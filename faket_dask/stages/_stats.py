"""Per-image statistics shared by the stages.

Noise and style match a target mean and std; the calibrated model a target's whole distribution.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from faket_dask.errors import InputError

__all__ = ["match_mean_std", "match_quantiles"]


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


def match_quantiles(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Map every image of ``x`` `(T, H, W)` monotonically onto its target's distribution.

    Quantile mapping per image: the pixel of rank ``k`` (of ``N``) in ``x[t]`` takes the
    target's empirical quantile at ``(k + 0.5) / N`` (linear interpolation between the sorted
    values of ``target[t]`` `(T, H', W')`, its own size; with ``N`` equal to the target's pixel
    count it is the target's ``k``-th smallest value exactly). Ranks come from a stable sort,
    so ties keep their pixel order (row-major): deterministic, and the map is monotone (never
    reverses two pixels' order). Returns float32 `(T, H, W)` on ``x``'s device.

    Raises
    ------
    InputError
        Not ``(T, H, W)`` stacks of the same ``T``, or a non-finite target.
    """
    if x.ndim != 3 or target.ndim != 3 or x.shape[0] != target.shape[0]:
        raise InputError(
            f"match_quantiles needs (T, H, W) stacks of one T, got {tuple(x.shape)} and "
            f"{tuple(target.shape)}"
        )
    ref = target.to(device=x.device, dtype=torch.float64).reshape(target.shape[0], -1)
    if not bool(torch.all(torch.isfinite(ref))):
        raise InputError("match_quantiles: the target has non-finite values")
    n, m = x.shape[1] * x.shape[2], ref.shape[1]
    src = x.to(torch.float64).reshape(x.shape[0], -1)
    order = torch.sort(src, dim=1, stable=True).indices
    ref_sorted = torch.sort(ref, dim=1).values
    if n == m:
        values = ref_sorted
    else:  # the target's quantiles at (k + 0.5) / n, on its own (j + 0.5) / m grid
        pos = ((torch.arange(n, dtype=torch.float64, device=x.device) + 0.5) * m / n - 0.5)
        pos = pos.clamp(0, m - 1)
        lo = pos.floor().long().clamp(max=m - 1)
        hi = (lo + 1).clamp(max=m - 1)
        frac = pos - lo.to(torch.float64)
        values = ref_sorted[:, lo] * (1 - frac) + ref_sorted[:, hi] * frac
    out = torch.empty_like(src)
    out.scatter_(1, order, values)
    return out.reshape(x.shape).to(torch.float32)
