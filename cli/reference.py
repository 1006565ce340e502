"""CLI commands: style references (prepare real data, project a tomogram, synthesise a demo)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from faket_dask.errors import InputError

from ._common import (
    DeviceOpt,
    OverwriteOpt,
    VarOpt,
    check_detector_px,
    check_output,
    echo_done,
    required_angles,
)

reference_app = typer.Typer(
    help="Style references: from a real tilt-series, from a tomogram, or a synthetic stand-in.",
    no_args_is_help=True,
)


@reference_app.command("prepare")
def prepare(
    ref: Annotated[Path, typer.Argument(help="Real tilt-series (T, H, W): MRC or Zarr.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Reference out (MRC/Zarr).")],
    pixel_spacing: Annotated[
        float, typer.Option(help="Target pixel spacing in Å (the dataset's).")
    ],
    input_pixel_spacing: Annotated[
        float | None,
        typer.Option(help="The reference's pixel spacing in Å (default: .mdoc, then header)."),
    ] = None,
    tilt_axis: Annotated[
        float | None,
        typer.Option(
            help="Tilt-axis angle in degrees from the Y axis, counterclockwise positive "
            "(IMOD/SerialEM convention; default: the .mdoc's, else 0)."
        ),
    ] = None,
    crop: Annotated[
        tuple[int, int] | None,
        typer.Option(help="Centre crop H W in target pixels (default: the whole image)."),
    ] = None,
    angles_file: Annotated[
        Path | None, typer.Option(help="IMOD .tlt/.rawtlt (default: the input's sibling .tlt).")
    ] = None,
    mdoc: Annotated[
        Path | None,
        typer.Option(
            help="SerialEM .mdoc: TiltAngle per [ZValue = n] section (default: REF.mdoc when "
            "REF has no .tlt)."
        ),
    ] = None,
    var: VarOpt = None,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
) -> None:
    """Resample a real tilt-series to the dataset's pixel spacing, rotate its axis onto Y, crop."""
    if angles_file is not None and mdoc is not None:
        raise InputError("give --angles-file or --mdoc, not both")
    if pixel_spacing <= 0:
        raise InputError(f"--pixel-spacing {pixel_spacing} must be > 0 Å")
    if crop is not None and min(crop) < 1:
        raise InputError(f"--crop {crop[0]} {crop[1]} must be positive")
    check_output(output, overwrite, tilts=True)
    # torch: loaded when the command runs, so that --help stays fast
    from faket_dask.ops.reference import PrepareOptions
    from faket_dask.ops.reference import prepare as prepare_locally

    opts = PrepareOptions(
        ref,
        output,
        pixel_spacing,
        input_pixel_spacing=input_pixel_spacing,
        tilt_axis=tilt_axis,
        crop=crop,
        angles_file=angles_file,
        mdoc=mdoc,
        var=var,
        device=device,
        overwrite=overwrite,
    )
    t, h, w = prepare_locally(opts).data.shape
    echo_done(output, f"{t} tilts of {h}x{w} at {pixel_spacing:g} Å/px, tilt axis on Y")


@reference_app.command("from-tomogram")
def from_tomogram(
    tomo: Annotated[Path, typer.Argument(help="Tomogram (Z, Y, X): MRC or Zarr.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Reference out (MRC/Zarr).")],
    angles: Annotated[
        str | None, typer.Option(help="START:STOP:STEP (STOP included), a list or a .tlt file.")
    ] = None,
    angles_file: Annotated[Path | None, typer.Option(help="IMOD .tlt/.rawtlt file.")] = None,
    detector_width: Annotated[
        int | None, typer.Option(help="Detector width W in pixels (default: the tomogram's X).")
    ] = None,
    invert: Annotated[
        bool, typer.Option(help="The tomogram is stored dense = bright: negate the tilts.")
    ] = False,
    var: VarOpt = None,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
) -> None:
    """Project a real tomogram into a style tilt-series (line integrals; dark stays dark)."""
    check_detector_px("--detector-width", detector_width)
    tilt_angles = required_angles(angles, angles_file)
    check_output(output, overwrite, tilts=True)
    # torch: loaded when the command runs, so that --help stays fast
    from faket_dask.ops.reference import from_tomogram as project_locally

    series = project_locally(
        tomo,
        output,
        tilt_angles,
        detector_width=detector_width,
        invert=invert,
        var=var,
        device=device,
        overwrite=overwrite,
    )
    t, h, w = series.data.shape
    echo_done(output, f"{t} tilts of {h}x{w} projected from {tomo}")


def _parse_shape(tokens: list[str]) -> tuple[int, ...]:
    from faket_dask.errors import InputError

    parts = [p for tok in tokens for p in re.split(r"[x,\s]+", tok.strip()) if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise InputError(
            f"--shape {' '.join(tokens)!r} is not whole numbers; write --shape T H W or H W"
        ) from None
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise InputError(f"--shape {' '.join(tokens)!r} must be T H W or H W (positive)")
    check_detector_px("--shape", *shape[-2:])
    return shape


@reference_app.command(
    "synth", context_settings={"allow_extra_args": True, "ignore_unknown_options": False}
)
def synth(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("-o", "--output", help="Reference out (MRC/Zarr).")],
    shape: Annotated[
        str | None,
        typer.Option(help="T H W or H W (also 41x256x256); T defaults to the angle count."),
    ] = None,
    angles: Annotated[
        str | None,
        typer.Option(
            help="START:STOP:STEP (STOP included), a list or a .tlt file (default: -60:60:3, "
            "or -60..60 evenly over the tilts that --shape T H W gives)."
        ),
    ] = None,
    pixel_spacing: Annotated[float, typer.Option(help="Pixel spacing in Å.")] = 10.0,
    defocus: Annotated[float, typer.Option(help="Underfocus in µm (positive).")] = 3.0,
    voltage: Annotated[float, typer.Option(help="Acceleration voltage in kV.")] = 300.0,
    dose: Annotated[float, typer.Option(help="Total dose over the series in e/Å².")] = 120.0,
    thickness: Annotated[float, typer.Option(help="Specimen thickness in nm.")] = 150.0,
    seed: Annotated[int, typer.Option(help="Seed of the phantom and the noise.")] = 0,
    mtf_nu_c: Annotated[
        float, typer.Option(help="Detector MTF fall-off in cycles/pixel (Lorentzian ν_c).")
    ] = 0.4,
    phantom: Annotated[
        str, typer.Option(help="cell (proteins, vesicles) or carbon (white, for CTF checks).")
    ] = "cell",
    overwrite: OverwriteOpt = False,
) -> None:
    """A physics-lite STAND-IN reference (CTF, shot noise, MTF, attenuation): not a microscope.

    Writes the tilts and, next to them, OUTPUT-stem.synth.json with every parameter, the
    per-tilt truth (SNR, signal and noise variance, electrons per pixel) and the note that
    this is a stand-in. Use a real reference (prepare / from-tomogram) for real work.
    """
    # numpy: loaded when the command runs, so that --help stays fast
    from faket_dask.angles import even_angles, parse_angles

    tokens = ([shape] if shape is not None else []) + list(ctx.args)
    if ctx.args and shape is None:
        raise InputError(f"unexpected arguments {' '.join(ctx.args)!r}; see --help")
    if phantom not in ("cell", "carbon"):
        raise InputError(f"--phantom {phantom!r} is not known; use cell or carbon")
    dims = _parse_shape(tokens) if tokens else (256, 256)
    if angles is None:
        tilt_angles = even_angles(dims[0]) if len(dims) == 3 else parse_angles("-60:60:3")
    else:
        tilt_angles = parse_angles(angles)
    if len(dims) == 2:
        dims = (len(tilt_angles), *dims)
    if dims[0] != len(tilt_angles):
        raise InputError(
            f"--shape has {dims[0]} tilts but --angles gives {len(tilt_angles)}; give "
            "--shape H W to take the angles' count, or leave out --angles"
        )
    check_output(output, overwrite, tilts=True, siblings=(".synth.json",))
    # torch: loaded when the command runs, so that --help stays fast
    from faket_dask.ops.reference import synth as synth_locally
    from faket_dask.stages.reference_synth import STAND_IN_NOTE

    params = {
        "pixel_spacing": pixel_spacing,
        "defocus_um": defocus,
        "voltage_kv": voltage,
        "dose": dose,
        "seed": seed,
        "thickness_nm": thickness,
        "phantom": phantom,
        "mtf_nu_c": mtf_nu_c,
    }
    sidecar = synth_locally(output, dims, tilt_angles, params, overwrite=overwrite)
    typer.secho(f"note: {STAND_IN_NOTE}", fg=typer.colors.YELLOW)
    echo_done(output, f"{dims[0]} tilts of {dims[1]}x{dims[2]} (parameters in {sidecar.name})")


@reference_app.command("calibrate")
def calibrate(
    ref: Annotated[Path, typer.Argument(help="Real tilt-series (T, H, W): MRC or Zarr.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Calibration out (.json).")],
    pixel_spacing: Annotated[
        float | None, typer.Option(help="Its pixel spacing in Å (default: .mdoc, then header).")
    ] = None,
    angles_file: Annotated[
        Path | None, typer.Option(help="IMOD .tlt/.rawtlt (default: the input's own angles).")
    ] = None,
    mdoc: Annotated[Path | None, typer.Option(help="SerialEM .mdoc with TiltAngle.")] = None,
    voltage: Annotated[
        float | None, typer.Option(help="Acceleration voltage in kV (default 300).")
    ] = None,
    cs: Annotated[
        float | None, typer.Option(help="Spherical aberration in mm (default 2.7).")
    ] = None,
    amplitude_contrast: Annotated[
        float | None, typer.Option(help="Amplitude contrast in [0, 1) (default 0.07).")
    ] = None,
    var: VarOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Calibrate the microscope from the tilt-series alone: defocus, noise spectrum, SNR per tilt.

    Writes OUTPUT (JSON) for `noise.model: calibrated` / `noise.calibration`: per tilt the
    defocus from the Thon rings, the noise power spectrum, the signal power spectrum, the SNR,
    mean and std, the fits' quality, and their dependence on 1/cos(tilt).
    """
    if output.suffix.lower() != ".json":
        raise InputError(f"{output}: the calibration is JSON; name it .json")
    if angles_file is not None and mdoc is not None:
        raise InputError("give --angles-file or --mdoc, not both")
    if amplitude_contrast is not None and not 0 <= amplitude_contrast < 1:
        raise InputError(f"--amplitude-contrast {amplitude_contrast} must be in [0, 1)")
    for name, v in (("--voltage", voltage), ("--cs", cs), ("--pixel-spacing", pixel_spacing)):
        if v is not None and not v > 0:
            raise InputError(f"{name} {v} must be > 0")
    check_output(output, overwrite)
    # numpy, scipy, torch: loaded when the command runs, so that --help stays fast
    from faket_dask.ops.reference import CalibrateOptions
    from faket_dask.ops.reference import calibrate as calibrate_locally

    optics = {"voltage_kv": voltage, "cs_mm": cs, "amplitude_contrast": amplitude_contrast}
    options = CalibrateOptions(
        ref=ref,
        output=output,
        pixel_spacing=pixel_spacing,
        angles_file=angles_file,
        mdoc=mdoc,
        optics={k: v for k, v in optics.items() if v is not None},
        var=var,
    )
    cal = calibrate_locally(options)
    snr = cal.snr
    echo_done(
        output,
        f"defocus {cal.defocus_um:.3f} µm (ring score {cal.ring_score:.2f}), SNR "
        f"{snr.min():.3g}-{snr.max():.3g} over {snr.size} tilts",
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.add_typer(reference_app, name="reference")
