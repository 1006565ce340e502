"""``style`` on local files: FakET's one-step style transfer on this process's device."""

from __future__ import annotations

from typing import TYPE_CHECKING

from faket_dask.errors import InputError
from faket_dask.io import TiltSeries, read_tilt_series, write_tilt_series
from faket_dask.ops._common import check_tilt_counts
from faket_dask.options import StyleOptions

if TYPE_CHECKING:
    from faket_dask.stages.style.weights import WeightsInfo

__all__ = ["style"]


def style(opts: StyleOptions) -> WeightsInfo:
    """Style CONTENT `(T, H, W)` towards the reference from INIT `(T, H, W)`; write FAKET.

    Returns the VGG-19 weights used (name and SHA-256).
    """
    c = read_tilt_series(opts.content, var=opts.vars.get("content"))
    s = read_tilt_series(opts.style, var=opts.vars.get("style"))
    i = read_tilt_series(opts.init, var=opts.vars.get("init"))
    check_tilt_counts(
        {
            str(opts.content): c.data.shape[0],
            str(opts.style): s.data.shape[0],
            str(opts.init): i.data.shape[0],
        }
    )
    if c.data.shape != i.data.shape:
        raise InputError(
            f"{opts.content} is {c.data.shape} but {opts.init} is {i.data.shape}; "
            "CONTENT and INIT must have the same shape"
        )
    # torch and the stages: loaded once the inputs are read, so that bad input fails fast
    import torch

    from faket_dask.pipeline import torch_device
    from faket_dask.stages.style import StyleRun, style_transfer
    from faket_dask.stages.style.weights import load_vgg19

    dev = torch_device(opts.device)
    model, info = load_vgg19(opts.weights, seed=opts.weights_seed, device=dev)
    out = style_transfer(
        torch.from_numpy(c.data).to(dev),
        torch.from_numpy(s.data).to(dev),
        torch.from_numpy(i.data).to(dev),
        model,
        StyleRun(precision=opts.precision, batch_size=opts.batch_size),
    )
    series = TiltSeries(out.cpu().numpy(), c.angles_deg, c.pixel_spacing)
    write_tilt_series(opts.output, series, var="styled", overwrite=opts.overwrite)
    return info
