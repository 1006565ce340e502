"""The ``faket-dask`` command: a thin typer app over the library's plain functions.

Sub-commands live in sibling modules, one per command group and named after it; each exposes
``register(app)``. Library errors (:class:`faket_dask.errors.FaketError`) become one line on
stderr and the exit code (2 bad input, 3 cluster unreachable, 1 some samples failed); no
traceback for user errors.
Heavy imports (torch, dask, zarr) happen inside commands so that ``--help`` and input
validation stay fast; typer command functions are exempt from the 8-parameter rule (each
parameter is one command-line option).
"""

from __future__ import annotations

import sys
from types import ModuleType

import typer

from faket_dask import __version__
from faket_dask.errors import FaketError

from . import (
    export,
    generate,
    info,
    noise,
    preview,
    project,
    realism,
    reconstruct,
    reference,
    report,
    sample,
    split,
    style,
    weights,
)

app = typer.Typer(
    name="faket-dask",
    help="Realistic, fully labeled synthetic cryo-ET tilt-series at scale (FakET on Dask).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# the order of `--help`: the stage verbs, then a dataset's life (generate, inspect, export, read)
COMMAND_GROUPS: tuple[ModuleType, ...] = (project, style, noise, weights, sample, reconstruct)
COMMAND_GROUPS += (reference, generate, info, export, preview, report, realism, split)
for module in COMMAND_GROUPS:
    module.register(app)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    """Realistic, fully labeled synthetic cryo-ET tilt-series at scale (FakET on Dask)."""
    if version:
        typer.echo(__version__)
        raise typer.Exit(0)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and map library errors to exit codes."""
    try:
        app(args=argv, prog_name="faket-dask")
    except FaketError as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
