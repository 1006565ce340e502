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
from typing import Any

import typer
import typer.main

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
    verify,
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
COMMAND_GROUPS += (reference, generate, info, verify, export, preview, report, realism, split)
for module in COMMAND_GROUPS:
    module.register(app)


def _print_version(value: bool) -> None:
    """``--version``: print the version and exit before any command is needed (eager)."""
    if value:
        typer.echo(f"faket-dask {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        is_eager=True,
        callback=_print_version,
    ),
) -> None:
    """Realistic, fully labeled synthetic cryo-ET tilt-series at scale (FakET on Dask)."""


def _without_flag_types(cmd: Any) -> Any:
    """``cmd`` with on/off flags shown without a type in ``--help`` (typer shows ``<bool>``)."""
    help_option = cmd.get_help_option(cmd.context_class(cmd))  # cached by the command
    for param in [*cmd.params, help_option]:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    for sub in getattr(cmd, "commands", {}).values():
        _without_flag_types(sub)
    return cmd


def command() -> Any:
    """The click command of the app, as the console script runs it."""
    return _without_flag_types(typer.main.get_command(app))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and map library errors to exit codes."""
    try:
        command()(args=argv, prog_name="faket-dask")
    except FaketError as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
