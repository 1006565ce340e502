"""CLI command: reconstruct a tilt-series into a tomogram (weighted back-projection)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faket_dask.errors import InputError

from ._common import (
    AnglesFileOpt,
    AnglesOpt,
    DeviceOpt,
    OverwriteOpt,
    VarOpt,
    check_output,
    echo_done,
    resolve_angles,
)


def reconstruct(
    tilts: Annotated[Path, typer.Argument(help="Tilt-series (T, H, W): MRC or Zarr group.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Tomogram out (MRC/Zarr).")],
    thickness: Annotated[int, typer.Option(help="Z thickness in binned voxels.")],
    bin: Annotated[
        int, typer.Option("--bin", help="Bin the tilts ×N with a cubic spline first (FakET: 2).")
    ] = 2,
    filter: Annotated[
        str, typer.Option("--filter", help="ramp, approxShrec (FakET's) or none.")
    ] = "approxShrec",
    angles: AnglesOpt = None,
    angles_file: AnglesFileOpt = None,
    slab_size: Annotated[
        int | None,
        typer.Option(help="Binned Y rows back-projected at once (default: ~512 MB of output)."),
    ] = None,
    var: VarOpt = None,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
) -> None:
    """Weighted back-projection (FakET §1.6) of a tilt-series into a (Z, Y, X) tomogram.

    Its grid is the binned grid of the projected volume (binned voxel i covers unbinned
    voxels [bin·i, bin·i + bin), centred on the volume's centre), so masks binned the same
    way line up voxel for voxel. Dense stays dark (no sign change).
    """
    # torch: loaded when the command runs, so that --help stays fast
    from faket_dask.ops.reconstruct import ReconstructOptions
    from faket_dask.ops.reconstruct import reconstruct as reconstruct_locally
    from faket_dask.stages.reconstruction import FILTERS

    if filter not in FILTERS:
        raise InputError(f"--filter {filter!r} is not known; use one of {', '.join(FILTERS)}")
    if thickness < 1:
        raise InputError(f"--thickness {thickness} must be >= 1 (binned voxels)")
    if bin < 1:
        raise InputError(f"--bin {bin} must be >= 1")
    if slab_size is not None and slab_size < 1:
        raise InputError(f"--slab-size {slab_size} must be >= 1")
    check_output(output, overwrite)
    opts = ReconstructOptions(
        tilts,
        output,
        thickness,
        bin=bin,
        filter=filter,
        angles_deg=resolve_angles(angles, angles_file),
        slab_size=slab_size,
        var=var,
        device=device,
        overwrite=overwrite,
    )
    z, y, x = reconstruct_locally(opts)
    echo_done(output, f"tomogram {z}x{y}x{x} (Z, Y, X), bin {bin}, {filter} filter")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("reconstruct")(reconstruct)
