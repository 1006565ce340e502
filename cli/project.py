"""CLI command: project a volume to noiseless tilts (locally or on a cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import (
    AnglesFileOpt,
    AnglesOpt,
    DeviceOpt,
    OverwriteOpt,
    ProfileOpt,
    SchedulerFileOpt,
    SchedulerOpt,
    VarOpt,
    check_detector_px,
    check_output,
    echo_done,
    on_cluster,
    require_zarr,
    required_angles,
)


def project(
    volume: Annotated[Path, typer.Argument(help="Volume (Z, Y, X): MRC or Zarr group.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Tilt-series out (MRC/Zarr).")],
    angles: AnglesOpt = None,
    angles_file: AnglesFileOpt = None,
    detector_width: Annotated[
        int | None, typer.Option(help="Detector width W in pixels (default: the volume's X).")
    ] = None,
    pixel_spacing: Annotated[
        float | None, typer.Option(help="Pixel spacing in Å (default: the volume's header).")
    ] = None,
    var: VarOpt = None,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    scheduler: SchedulerOpt = None,
    scheduler_file: SchedulerFileOpt = None,
    cluster_profile: ProfileOpt = None,
    rows_per_block: Annotated[
        int, typer.Option(help="On a cluster: Y rows of the volume per task.")
    ] = 64,
) -> None:
    """Project a volume to noiseless tilts (FakET's NOISELESS: negated line integrals about Y).

    With a cluster option and Zarr input/output, every Y-slab is projected by its own task.
    """
    # numpy: loaded when the command runs, so that --help stays fast
    from faket_dask.options import ProjectOptions

    check_detector_px("--detector-width", detector_width)
    tilt_angles = required_angles(angles, angles_file)
    check_output(output, overwrite, tilts=True)
    opts = ProjectOptions(
        volume,
        output,
        tilt_angles,
        detector_width=detector_width,
        pixel_spacing=pixel_spacing,
        var=var,
        device=device,
        overwrite=overwrite,
        rows_per_block=rows_per_block,
    )
    if on_cluster(scheduler, scheduler_file, cluster_profile):
        require_zarr("projecting", volume, output)
        # dask: loaded only for a cluster run
        from faket_dask.dist.cluster import connect
        from faket_dask.dist.series_graph import project_zarr

        with connect(scheduler, scheduler_file, cluster_profile) as client:
            result = project_zarr(opts, client)
        echo_done(output, f"NOISELESS on the cluster in {result['n_blocks']} slabs")
        return
    # torch: loaded only when the command runs
    from faket_dask.ops.project import project as project_locally

    t, h, w = project_locally(opts).shape
    echo_done(output, f"{t} tilts of {h}x{w}")


def register(app: typer.Typer) -> None:
    """Add ``project`` to the app."""
    app.command("project")(project)
