"""CLI command: split, train/validation/test assignment recorded in the store."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import StoreArg


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
    n = sum(len(v) for v in rec["ids"].values())
    for (name, ids), frac in zip(rec["ids"].items(), rec["fractions"], strict=True):
        if frac > 0 and not ids:
            typer.secho(
                f"warning: {name} has no samples: {n} complete samples at fraction {frac:g} "
                f"leave it empty (expect about {round(1 / frac)} samples per {name} sample); "
                "generate more samples (--resume with a larger --n-samples) and split again",
                err=True,
                fg=typer.colors.YELLOW,
            )


def register(app: typer.Typer) -> None:
    """Add ``split`` to the app."""
    app.command("split")(split)
