"""The ``faket-dask`` command: a thin typer app over the library's plain functions.

Sub-commands live in sibling modules, one per area; each exposes ``register(app)``. Library
errors (:class:`faket_dask.errors.FaketError`) become one line on stderr and the exit code
(2 bad input, 3 cluster unreachable, 1 some samples failed); no traceback for user errors.
Heavy imports (torch, dask) happen inside commands so that ``--help`` and input validation
stay fast.
"""

from __future__ import annotations

import sys

import typer

from . import generate, preview, reconstruct, reference, sample, stages

app = typer.Typer(
    name="faket-dask",
    help="Realistic, fully labeled synthetic cryo-ET tilt-series at scale (FakET on Dask).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for module in (stages, sample, reconstruct, reference, generate, preview):
    module.register(app)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    """Realistic, fully labeled synthetic cryo-ET tilt-series at scale (FakET on Dask)."""
    if version:
        from faket_dask import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and map library errors to exit codes."""
    from faket_dask.errors import FaketError

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
