"""CLI command: realism of a finished store, scored on a held-out reference tilt-series."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from faket_dask.errors import InputError

from ._common import OverwriteOpt, VarOpt, echo_done


def realism(
    store: Annotated[Path, typer.Argument(help="Dataset store written by `faket-dask generate`.")],
    heldout: Annotated[
        Path,
        typer.Option(
            "--heldout",
            help="A second reference tilt-series of the same microscope that the run never saw "
            "(MRC/Zarr, with angles, at the dataset's pixel spacing).",
        ),
    ],
    max_samples: Annotated[int, typer.Option(help="Samples scored (the first ones).")] = 4,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the table as JSON.")
    ] = None,
    var: VarOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Per modality and tilt angle: distance to held-out tilts, beside d(style ref, held-out).

    Spectrum (decades), histogram and local-variance texture (Jensen-Shannon) distances; the
    ratio says how many times the distance between two real tilt-series it is.
    """
    if max_samples < 1:
        raise InputError(f"--max-samples {max_samples} must be >= 1")
    if json_out is not None and json_out.exists() and not overwrite:
        raise InputError(f"{json_out} exists; pass --overwrite or choose another output")
    if not (store / "zarr.json").is_file():
        raise InputError(f"{store} is not a dataset store (no zarr.json)")

    table = heldout_summary(store, heldout, max_samples=max_samples, var=var)
    # numpy, scipy, zarr: loaded when the command runs, so that --help stays fast
    from faket_dask.read.realism import format_table

    typer.echo(format_table(table))
    if json_out is not None:
        json_out.write_text(json.dumps(table, indent=2) + "\n")
        echo_done(json_out, f"{len(table)} rows")


def heldout_summary(
    store: Path, heldout: Path, max_samples: int = 4, var: str | None = None
) -> list[dict]:
    """:func:`faket_dask.read.realism.summarize` of a store against a held-out series file."""
    # numpy, scipy, zarr: loaded when the command runs, so that --help stays fast
    from faket_dask.io import read_tilt_series
    from faket_dask.read.realism import store_realism, summarize

    series = read_tilt_series(heldout, var=var)
    if series.angles_deg is None:
        raise InputError(f"{heldout} has no tilt angles; give it a sibling .tlt")
    rows = store_realism(store, series.data, series.angles_deg, max_samples=max_samples)
    if not rows:
        raise InputError(f"{store} has no complete samples with tilts to score")
    return summarize(rows)


def heldout_table(store: Path, heldout: Path, max_samples: int = 4) -> str:
    """The text table of :func:`heldout_summary` (for the report)."""
    # numpy, scipy, zarr: loaded when the command runs, so that --help stays fast
    from faket_dask.read.realism import format_table

    return format_table(heldout_summary(store, heldout, max_samples=max_samples))


def register(app: typer.Typer) -> None:
    """Add this module's command to the app."""
    app.command("realism")(realism)
