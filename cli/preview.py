"""CLI command: preview, one sample's modalities at three tilts as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import OverwriteOpt, StoreArg, check_png_out, echo_done


def preview(
    store: StoreArg,
    sample: Annotated[int, typer.Option("--sample", help="Sample id.")] = 0,
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG out.")] = Path("preview.png"),
    dpi: Annotated[int, typer.Option(help="Resolution of the PNG (dots per inch).")] = 80,
    overwrite: OverwriteOpt = False,
) -> None:
    """NOISELESS, NOISY, FAKET and the style reference at three tilts, with power spectra."""
    check_png_out(output, overwrite, (".png",))
    from faket_dask.read.preview import preview as make_preview

    make_preview(store, sample, output, dpi=dpi)
    echo_done(output, f"preview of sample {sample}")


def register(app: typer.Typer) -> None:
    """Add ``preview`` to the app."""
    app.command("preview")(preview)
