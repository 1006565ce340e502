"""CLI commands: export one sample's array as MRC + STAR, or samples as a copick project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import OverwriteOpt, StoreArg, echo_done


def export(
    store: Annotated[Path, typer.Argument(help="A dataset store made by `generate`.")],
    sample: Annotated[int, typer.Option("--sample", help="Sample id.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output .mrc (or .zarr).")],
    modality: Annotated[
        str,
        typer.Option(
            "--modality",
            help="styled, noisy, content, baseline, noiseless; or volume:class_mask, "
            "volume:instance_mask, tomogram:tomogram, tomogram:class_mask, ...",
        ),
    ] = "styled",
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
) -> None:
    """Export one sample's array as MRC (voxel size, .tlt) plus a STAR file of its particles."""
    from faket_dask.read.export import export_sample

    files = export_sample(store, sample, modality, output, overwrite=overwrite)
    for f in files:
        typer.echo(f"wrote {f}")


def export_copick(
    store: StoreArg,
    sample: Annotated[
        list[int] | None, typer.Option("--sample", help="Sample id (repeat; default: all).")
    ] = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="copick project folder out.")
    ] = Path("copick_project"),
    tomo_type: Annotated[
        str, typer.Option(help="copick tomogram type name of the reconstruction.")
    ] = "wbp",
    overwrite: OverwriteOpt = False,
) -> None:
    """Export samples as a copick project: tomograms (OME-Zarr), picks per class, config."""
    from faket_dask.read.export_copick import export_copick as do_export

    written = do_export(store, output, sample_ids=sample, tomo_type=tomo_type, overwrite=overwrite)
    echo_done(output, f"copick project ({written['runs']} runs, {written['picks']} pick files)")


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``export-copick`` to the app."""
    app.command("export")(export)
    app.command("export-copick")(export_copick)
