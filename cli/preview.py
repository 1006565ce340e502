"""CLI commands on a finished store: preview and report pictures, splits, copick export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import OverwriteOpt, echo_done

StoreArg = Annotated[Path, typer.Argument(help="Dataset store written by `faket-dask generate`.")]


def _check_png_out(output: Path, overwrite: bool, suffixes: tuple[str, ...]) -> None:
    from faket_dask.errors import InputError

    if output.suffix.lower() not in suffixes:
        raise InputError(f"{output}: use one of {', '.join(suffixes)}")
    if output.exists() and not overwrite:
        raise InputError(f"{output} exists; pass --overwrite or choose another output")
    if not output.parent.is_dir() and str(output.parent) not in ("", "."):
        raise InputError(f"output folder {output.parent} does not exist; create it first")


def preview(
    store: StoreArg,
    sample: Annotated[int, typer.Option("--sample", help="Sample id.")] = 0,
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG out.")] = Path("preview.png"),
    dpi: Annotated[int, typer.Option(help="Resolution of the PNG (dots per inch).")] = 80,
    overwrite: OverwriteOpt = False,
) -> None:
    """NOISELESS, NOISY, FAKET and the style reference at three tilts, with power spectra."""
    _check_png_out(output, overwrite, (".png",))
    from faket_dask.read.preview import preview as make_preview

    make_preview(store, sample, output, dpi=dpi)
    echo_done(output, f"preview of sample {sample}")


def report(
    store: StoreArg,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Report out: .html or .png.")
    ] = Path("report.html"),
    max_samples: Annotated[
        int, typer.Option(help="Samples in the gallery, counts and realism figures.")
    ] = 8,
    dpi: Annotated[int, typer.Option(help="Resolution of the figure (dots per inch).")] = 80,
    overwrite: OverwriteOpt = False,
) -> None:
    """One-page dataset report: gallery, particles per class, throughput, realism per modality."""
    _check_png_out(output, overwrite, (".html", ".htm", ".png"))
    from faket_dask.read.preview import report as make_report

    make_report(store, output, max_samples=max_samples, dpi=dpi)
    echo_done(output, "dataset report")


def split(
    store: StoreArg,
    fractions: Annotated[
        tuple[float, float, float],
        typer.Option(help="Train, validation and test fractions (sum 1)."),
    ] = (0.8, 0.1, 0.1),
    seed: Annotated[int, typer.Option(help="Seed of the keyed hash that assigns samples.")] = 0,
) -> None:
    """Assign complete samples to train/validation/test and record it in the store's attrs."""
    from faket_dask.read.access import write_splits

    rec = write_splits(store, fractions, seed)
    counts = ", ".join(f"{k} {len(v)}" for k, v in rec["ids"].items())
    typer.echo(f"recorded splits in {store}: {counts}")


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
    """Add ``preview``, ``report``, ``split`` and ``export-copick``."""
    app.command("preview")(preview)
    app.command("report")(report)
    app.command("split")(split)
    app.command("export-copick")(export_copick)
