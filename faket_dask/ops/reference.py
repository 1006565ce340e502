"""``reference prepare`` and ``reference from-tomogram`` on local files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faket_dask.angles import read_tilt_file
from faket_dask.io import TiltSeries, read_tilt_series, read_volume, write_tilt_series

__all__ = ["PrepareOptions", "from_tomogram", "prepare", "synth"]


@dataclass(frozen=True)
class PrepareOptions:
    """A real tilt-series resampled to ``pixel_spacing`` (Å), its tilt axis rotated onto Y.

    ``input_pixel_spacing`` and ``tilt_axis`` (degrees from Y) default to the ``.mdoc``'s (then
    the header's, then 0); angles come from ``mdoc``, else ``angles_file``, else the input's own
    (a sibling ``REF.mdoc`` is read when the input has no angles). ``crop``: centre (H, W).
    """

    ref: Path
    output: Path
    pixel_spacing: float
    input_pixel_spacing: float | None = None
    tilt_axis: float | None = None
    crop: tuple[int, int] | None = None
    angles_file: Path | None = None
    mdoc: Path | None = None
    var: str | None = None
    device: str = "auto"
    overwrite: bool = False


def prepare(opts: PrepareOptions) -> TiltSeries:
    """Read, resample, rotate and crop the reference; write it and return it `(T, H, W)`."""
    series = read_tilt_series(opts.ref, var=opts.var)
    spacing_in, axis, mdoc = opts.input_pixel_spacing, opts.tilt_axis, opts.mdoc
    angles: np.ndarray | None
    sibling = Path(f"{opts.ref}.mdoc")  # SerialEM writes ts.st.mdoc / ts.mrc.mdoc
    no_angles = opts.angles_file is None and series.angles_deg is None
    if mdoc is None and no_angles and sibling.is_file():
        mdoc = sibling
    # torch and the stages: loaded once the inputs are read, so that bad input fails fast
    from faket_dask.pipeline import torch_device
    from faket_dask.stages.reference import prepare_reference, read_mdoc

    if mdoc is not None:
        info = read_mdoc(mdoc)
        angles = info.angles_deg
        spacing_in = spacing_in if spacing_in is not None else info.pixel_spacing
        axis = axis if axis is not None else info.tilt_axis_deg
    elif opts.angles_file is not None:
        angles = read_tilt_file(opts.angles_file)
    else:
        angles = series.angles_deg
    out = prepare_reference(
        series,
        spacing_in,
        opts.pixel_spacing,
        tilt_axis_deg=axis if axis is not None else 0.0,
        crop=opts.crop,
        angles_deg=angles,
        device=torch_device(opts.device),
    )
    write_tilt_series(opts.output, out, var="reference", overwrite=opts.overwrite)
    return out


def from_tomogram(
    tomo: Path,
    output: Path,
    angles_deg: np.ndarray,
    *,
    detector_width: int | None = None,
    invert: bool = False,
    var: str | None = None,
    device: str = "auto",
    overwrite: bool = False,
) -> TiltSeries:
    """Project a real tomogram `(Z, Y, X)` into a style tilt-series `(T, Y, W)`; write it."""
    vol = read_volume(tomo, var=var)
    # torch and the stages: loaded once the inputs are read, so that bad input fails fast
    from faket_dask.pipeline import torch_device
    from faket_dask.stages.reference import from_tomogram as project_tomogram

    series = project_tomogram(
        vol.data,
        angles_deg,
        detector_width=detector_width,
        invert=invert,
        pixel_spacing=vol.pixel_spacing,
        device=torch_device(device),
    )
    write_tilt_series(output, series, var="reference", overwrite=overwrite)
    return series


def synth(
    output: Path,
    dims: tuple[int, ...],
    angles_deg: np.ndarray,
    params: dict[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Write a stand-in reference of `dims` `(T, H, W)` and its ``.synth.json``; the latter's path.

    ``params`` are :func:`faket_dask.stages.reference.synth_reference`'s keyword arguments.
    """
    # torch and the stages: loaded when the command runs
    from faket_dask.stages.reference import synth_params, synth_reference

    sidecar = output.with_suffix(".synth.json")
    t, h, w = dims
    series = synth_reference((t, h, w), angles_deg, **params)
    write_tilt_series(output, series, var="reference", overwrite=overwrite)
    record = synth_params((t, h, w), angles_deg, **params).to_dict()
    sidecar.write_text(json.dumps(record, indent=2) + "\n")
    return sidecar
