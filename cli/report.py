"""CLI command: report, the one-page dataset report (HTML or PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import OverwriteOpt, StoreArg, check_png_out, echo_done
from .realism import heldout_table


def report(
    store: StoreArg,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Report out: .html or .png.")
    ] = Path("report.html"),
    max_samples: Annotated[
        int, typer.Option(help="Samples in the gallery, counts and realism figures.")
    ] = 8,
    dpi: Annotated[int, typer.Option(help="Resolution of the figure (dots per inch).")] = 80,
    heldout: Annotated[
        Path | None,
        typer.Option(
            "--heldout",
            help="A reference tilt-series the run never saw: add `faket-dask realism`'s table "
            "(printed, and a section of the HTML report).",
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """One-page dataset report: gallery, particles per class, throughput, realism per modality."""
    check_png_out(output, overwrite, (".html", ".htm", ".png"))
    from faket_dask.read.report import report as make_report

    table = None
    if heldout is not None:
        table = heldout_table(store, heldout, max_samples=max_samples)
        typer.echo(table)
    make_report(store, output, max_samples=max_samples, dpi=dpi, heldout_table=table)
    echo_done(output, "dataset report")


def register(app: typer.Typer) -> None:
    """Add ``report`` to the app."""
    app.command("report")(report)
