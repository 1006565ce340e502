"""CLI commands: ``weights fetch`` and ``weights info`` (the VGG-19 weights cache)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ._common import echo_done

weights_app = typer.Typer(help="VGG-19 weights: download into the cache, show what is there.")


@weights_app.command("fetch")
def weights_fetch(
    url: Annotated[str | None, typer.Option(help="Download from this URL instead.")] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache folder (default: torch hub).")
    ] = None,
) -> None:
    """Download torchvision's VGG-19 ImageNet weights (hash-checked) into the cache."""
    # torch: loaded when the command runs, so that --help stays fast
    from faket_dask.stages.style.weights import IMAGENET_URL, fetch_imagenet

    path = fetch_imagenet(url=url or IMAGENET_URL, cache_dir=cache_dir)
    echo_done(path, "VGG-19 ImageNet weights")


@weights_app.command("info")
def weights_info(
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache folder (default: torch hub).")
    ] = None,
) -> None:
    """Show where the weights cache is and what it holds."""
    # torch: loaded when the command runs, so that --help stays fast
    from faket_dask.stages.style.weights import weights_info as info

    typer.echo(json.dumps(info(cache_dir=cache_dir), indent=2, default=str))


def register(app: typer.Typer) -> None:
    """Add ``weights fetch`` and ``weights info`` to the app."""
    app.add_typer(weights_app, name="weights")
