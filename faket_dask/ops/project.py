"""``project`` on local files: a volume to noiseless tilts on this process's device."""

from __future__ import annotations

from dataclasses import dataclass

from faket_dask.io import TiltSeries, read_volume, write_tilt_series
from faket_dask.options import ProjectOptions

__all__ = ["Projected", "project"]


@dataclass(frozen=True)
class Projected:
    """What :func:`project` wrote: ``shape`` is `(T, H, W)`."""

    shape: tuple[int, int, int]


def project(opts: ProjectOptions) -> Projected:
    """Read the volume `(Z, Y, X)`, project it (FakET's NOISELESS) and write `(T, Y, W)`."""
    vol = read_volume(opts.volume, var=opts.var)
    # torch and the stages: loaded once the inputs are read, so that bad input fails fast
    import torch

    from faket_dask.pipeline import torch_device
    from faket_dask.stages.projection import project as project_volume

    tensor = torch.from_numpy(vol.data.astype("float32")).to(torch_device(opts.device))
    tilts = project_volume(tensor, opts.angles_deg, detector_width=opts.detector_width)
    spacing = opts.pixel_spacing if opts.pixel_spacing is not None else vol.pixel_spacing
    series = TiltSeries(tilts.cpu().numpy(), opts.angles_deg, spacing)
    write_tilt_series(opts.output, series, var="noiseless", overwrite=opts.overwrite)
    t, h, w = (int(v) for v in tilts.shape)
    return Projected((t, h, w))
