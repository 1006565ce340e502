"""``reference prepare``, ``from-tomogram``, ``synth`` and ``calibrate`` on local files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faket_dask.angles import read_tilt_file
from faket_dask.errors import InputError
from faket_dask.io import TiltSeries, read_tilt_series, read_volume, write_tilt_series

if TYPE_CHECKING:
    from faket_dask.stages.calibration import Calibration

__all__ = ["CalibrateOptions", "PrepareOptions", "calibrate", "from_tomogram", "prepare", "synth"]


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

    ``params`` are :class:`faket_dask.stages.reference_synth.SynthOptions`' fields. The
    sidecar records them and the per-tilt truth (``truth``: SNR, signal and noise variance,
    electrons per pixel), against which a calibration can be checked.
    """
    # torch and the stages: loaded when the command runs
    from faket_dask.stages.reference_synth import SynthOptions, synth_params, synth_reference

    sidecar = output.with_suffix(".synth.json")
    t, h, w = dims
    truth: dict[str, np.ndarray] = {}
    series = synth_reference((t, h, w), angles_deg, SynthOptions(**params), truth=truth)
    write_tilt_series(output, series, var="reference", overwrite=overwrite)
    record = synth_params((t, h, w), angles_deg, **params).to_dict()
    record["truth"] = {k: [float(v) for v in truth[k]] for k in sorted(truth)}
    sidecar.write_text(json.dumps(record, indent=2) + "\n")
    return sidecar


@dataclass(frozen=True)
class CalibrateOptions:
    """A real tilt-series to calibrate (:func:`faket_dask.stages.calibration.calibrate`).

    Angles come from ``mdoc``, else ``angles_file``, else the input's own; the pixel spacing
    from ``pixel_spacing``, else the ``.mdoc``, else the header. ``optics``: the CTF parameters
    the user gave (``voltage_kv``, ``cs_mm``, ``amplitude_contrast``), the rest defaulted.
    """

    ref: Path
    output: Path
    pixel_spacing: float | None = None
    angles_file: Path | None = None
    mdoc: Path | None = None
    optics: dict[str, float] | None = None
    var: str | None = None


def calibrate(options: CalibrateOptions) -> Calibration:
    """Calibrate ``options.ref`` and write the JSON to ``options.output``; the calibration."""
    # scipy, torch and the stages: loaded when the command runs
    from faket_dask.stages.calibration import calibrate as calibrate_series
    from faket_dask.stages.ctf import Optics
    from faket_dask.stages.reference import read_mdoc

    series = read_tilt_series(options.ref, var=options.var)
    spacing, angles = options.pixel_spacing, series.angles_deg
    if options.mdoc is not None:
        info = read_mdoc(options.mdoc)
        angles = info.angles_deg
        spacing = spacing if spacing is not None else info.pixel_spacing
    elif options.angles_file is not None:
        angles = read_tilt_file(options.angles_file)
    if angles is None:
        raise InputError(f"{options.ref} has no tilt angles; give --angles-file or --mdoc")
    spacing = spacing if spacing is not None else series.pixel_spacing
    optics = Optics(**options.optics) if options.optics else None
    cal = calibrate_series(
        series.data, angles, spacing, optics=optics, provenance={"source": str(options.ref)}
    )
    cal.save(options.output)
    return cal
