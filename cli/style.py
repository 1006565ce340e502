"""CLI command: FakET's one-step neural style transfer (locally or on a cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faket_dask.errors import InputError

from ._common import (
    DeviceOpt,
    OverwriteOpt,
    ProfileOpt,
    SchedulerFileOpt,
    SchedulerOpt,
    TiltsPerBlockOpt,
    check_output,
    echo_done,
    on_cluster,
    require_zarr,
)


def style(
    content: Annotated[Path, typer.Argument(help="CONTENT tilt-series (MRC/Zarr).")],
    style_ref: Annotated[Path, typer.Option("--style", help="Style reference tilt-series.")],
    init: Annotated[Path, typer.Option("--init", help="Initial image: the NOISY tilt-series.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="FAKET tilt-series out.")],
    weights: Annotated[
        str, typer.Option(help="'imagenet' (cached/downloaded), 'random', or a state-dict path.")
    ] = "imagenet",
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    precision: Annotated[str, typer.Option(help="fp32 (exact), tf32 or bf16.")] = "fp32",
    batch: Annotated[int, typer.Option("--batch", help="Tilts per GPU batch.")] = 4,
    content_var: Annotated[str | None, typer.Option(help="Zarr array of CONTENT.")] = None,
    style_var: Annotated[str | None, typer.Option(help="Zarr array of the style.")] = None,
    init_var: Annotated[str | None, typer.Option(help="Zarr array of INIT.")] = None,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    scheduler: SchedulerOpt = None,
    scheduler_file: SchedulerFileOpt = None,
    cluster_profile: ProfileOpt = None,
    tilts_per_block: TiltsPerBlockOpt = 8,
) -> None:
    """Apply FakET's one-step neural style transfer so the tilts take on the reference's noise.

    With --scheduler, --scheduler-file or --cluster-profile and Zarr inputs, the series is
    styled as a Dask graph over tilt blocks across the cluster (global min/max first).
    """
    # numpy: loaded when the command runs, so that --help stays fast
    from faket_dask.options import StyleOptions

    if precision not in ("fp32", "tf32", "bf16"):
        raise InputError(f"--precision {precision!r} is not known; use fp32, tf32 or bf16")
    if batch < 1:
        raise InputError(f"--batch {batch} must be at least 1")
    check_output(output, overwrite, tilts=True)
    opts = StyleOptions(
        content,
        style_ref,
        init,
        output,
        weights=weights,
        weights_seed=seed,
        precision=precision,
        batch_size=batch,
        device=device,
        overwrite=overwrite,
        tilts_per_block=tilts_per_block,
        vars={"content": content_var, "style": style_var, "init": init_var},
    )
    if on_cluster(scheduler, scheduler_file, cluster_profile):
        require_zarr("styling", content, style_ref, init, output)
        # dask: loaded only for a cluster run
        from faket_dask.dist.cluster import connect
        from faket_dask.dist.series_graph import style_zarr

        with connect(scheduler, scheduler_file, cluster_profile) as client:
            result = style_zarr(opts, client)
        echo_done(output, f"FAKET on the cluster in {result.get('n_blocks', '?')} blocks")
        return
    # torch: loaded only when the command runs
    from faket_dask.ops.style import style as style_locally

    info = style_locally(opts)
    sha = f" ({info.sha256[:12]})" if info.sha256 else ""
    echo_done(output, f"FAKET with {info.name} weights{sha}")


def register(app: typer.Typer) -> None:
    """Add ``style`` to the app."""
    app.command("style")(style)
