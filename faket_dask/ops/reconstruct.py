"""``reconstruct`` on local files: weighted back-projection on this process's device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faket_dask.errors import InputError
from faket_dask.io import Volume, read_tilt_series, write_volume
from faket_dask.ops._common import angles_or_own, check_tilt_counts

__all__ = ["ReconstructOptions", "reconstruct"]


@dataclass(frozen=True)
class ReconstructOptions:
    """A tilt-series `(T, H, W)` into a tomogram `(thickness, H // bin, W // bin)`.

    ``angles_deg`` (T,) or ``None`` for the input's own; ``filter`` ramp, approxShrec or none;
    ``slab_size`` binned Y rows back-projected at once (``None``: ~512 MB of output).
    """

    tilts: Path
    output: Path
    thickness: int
    bin: int = 2
    filter: str = "approxShrec"
    angles_deg: np.ndarray | None = None
    slab_size: int | None = None
    var: str | None = None
    device: str = "auto"
    overwrite: bool = False


def reconstruct(opts: ReconstructOptions) -> tuple[int, int, int]:
    """Read the tilts, back-project them (FakET §1.6), write the tomogram; its `(Z, Y, X)`."""
    series = read_tilt_series(opts.tilts, var=opts.var)
    tilt_angles = angles_or_own(opts.angles_deg, series.angles_deg)
    check_tilt_counts({str(opts.tilts): series.data.shape[0], "angles": len(tilt_angles)})
    if min(series.data.shape[1:]) < opts.bin:
        raise InputError(
            f"{opts.tilts}: tilts of {series.data.shape[1:]} are smaller than --bin {opts.bin}"
        )
    # torch and the stages: loaded once the inputs are read, so that bad input fails fast
    import torch

    from faket_dask.pipeline import torch_device
    from faket_dask.stages.reconstruction import reconstruct as wbp

    data = torch.from_numpy(series.data).to(torch_device(opts.device))
    tomo = wbp(
        data,
        tilt_angles,
        opts.thickness,
        bin=opts.bin,
        filter=opts.filter,
        slab_size=opts.slab_size,
    )
    spacing = series.pixel_spacing * opts.bin if series.pixel_spacing is not None else None
    out = Volume(tomo.cpu().numpy(), spacing)
    write_volume(opts.output, out, var="tomogram", overwrite=opts.overwrite)
    z, y, x = (int(v) for v in tomo.shape)
    return z, y, x
