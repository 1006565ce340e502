"""CLI commands: export one sample's array, a RELION 5 set, NGFF 0.4 images, a copick project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faket_dask.errors import InputError

from ._common import OverwriteOpt, StoreArg, echo_done


def export(
    store: Annotated[Path, typer.Argument(help="A dataset store made by `generate`.")],
    sample: Annotated[
        list[int] | None,
        typer.Option("--sample", help="Sample id (repeat for --relion5/--ngff04; default: all)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Output .mrc (or .zarr).")
    ] = None,
    modality: Annotated[
        str,
        typer.Option(
            "--modality",
            help="styled, noisy, content, baseline, noiseless; or volume:class_mask, "
            "volume:instance_mask, tomogram:tomogram, tomogram:class_mask, ...",
        ),
    ] = "styled",
    relion5: Annotated[
        Path | None,
        typer.Option(
            "--relion5",
            help="Write a RELION 5 tomography set into this folder instead: tomograms.star, "
            "a STAR + MRC stack + .tlt per tilt-series, particles.star, optimisation_set.star.",
        ),
    ] = None,
    ngff04: Annotated[
        Path | None,
        typer.Option(
            "--ngff04",
            help="Write tomograms and volumes as OME-Zarr NGFF 0.4 on Zarr v2 (the data "
            "portal's format: x1/x2/x4 pyramid, masks as labels) into this folder instead.",
        ),
    ] = None,
    dose_per_tilt: Annotated[
        float, typer.Option(help="--relion5: electron dose per tilt (e/A^2), in store order.")
    ] = 3.0,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
) -> None:
    """Export one sample's array as MRC (voxel size, .tlt) plus a STAR file of its particles.

    With --relion5 or --ngff04: samples (default: all) as a RELION 5 set or NGFF 0.4 images.
    """
    from faket_dask.read.export import export_sample  # zarr, xarray: inside the command

    if relion5 is not None or ngff04 is not None:
        _export_sets(store, sample, modality, relion5, ngff04, dose_per_tilt, overwrite)
        return
    if not sample or len(sample) != 1 or output is None:
        raise InputError("exporting one array needs one --sample and -o (or --relion5, --ngff04)")
    files = export_sample(store, sample[0], modality, output, overwrite=overwrite)
    for f in files:
        typer.echo(f"wrote {f}")


def _export_sets(
    store: Path,
    sample: list[int] | None,
    modality: str,
    relion5: Path | None,
    ngff04: Path | None,
    dose_per_tilt: float,
    overwrite: bool,
) -> None:
    from faket_dask.read.export_ngff import export_ngff04
    from faket_dask.read.export_relion import RelionOptions, export_relion5

    if relion5 is not None:
        opts = RelionOptions(modality=modality, dose_per_tilt=dose_per_tilt)
        res = export_relion5(store, relion5, sample_ids=sample, options=opts, overwrite=overwrite)
        n, p = res["tilt_series"], res["particles_n"]
        echo_done(relion5, f"RELION 5 set ({n} tilt-series, {p} particles)")
    if ngff04 is not None:
        res = export_ngff04(store, ngff04, sample_ids=sample, overwrite=overwrite)
        echo_done(ngff04, f"NGFF 0.4 images ({len(res['images'])} in {res['samples']} samples)")


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
    root: Annotated[
        str | None,
        typer.Option(
            help="The project root URL in copick_config.json (default local://.: the folder "
            "the project is opened from, so a copied project opens from its own folder)."
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Export samples as a copick project: tomograms (OME-Zarr), picks per class, config."""
    from faket_dask.read.export_copick import export_copick as do_export_copick

    written = do_export_copick(
        store, output, sample_ids=sample, tomo_type=tomo_type, overwrite=overwrite, root=root
    )
    echo_done(output, f"copick project ({written['runs']} runs, {written['picks']} pick files)")


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``export-copick`` to the app."""
    app.command("export")(export)
    app.command("export-copick")(export_copick)
