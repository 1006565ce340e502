"""CLI command: verify a dataset store's bytes against its recorded checksums (and repair)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def verify(
    ctx: typer.Context,
    store: Annotated[Path, typer.Argument(help="A dataset store made by `generate`.")],
    sample: Annotated[
        list[int] | None, typer.Option("--sample", help="Sample id (repeat; default: all).")
    ] = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Mark damaged samples incomplete (and fix the manifest) so that "
            "`generate --resume` regenerates them.",
        ),
    ] = False,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="Only check that every recorded file is there with its size."
        ),
    ] = False,
) -> None:
    """Re-read every array of every complete sample and check its recorded SHA-256.

    Also checks the manifest against the samples. Prints what is damaged; exit code 1 when
    anything is (after --repair too: the repaired samples are still to be regenerated).
    """
    from faket_dask.errors import SamplesFailedError
    from faket_dask.io.lock import store_lock
    from faket_dask.io.verify import repair as do_repair
    from faket_dask.io.verify import verify_store

    if repair:  # a writer: one at a time, and nobody writes while we read
        ctx.with_resource(store_lock(store, "faket-dask verify --repair"))
    report = verify_store(store, sample, full=not quick)
    for sid, problems in sorted(report.damaged.items()):
        for problem in problems:
            typer.echo(f"sample {sid}: {problem}")
    for problem in report.manifest:
        typer.echo(f"manifest: {problem}")
    if report.unrecorded:
        shown = ", ".join(str(i) for i in report.unrecorded[:10])
        typer.echo(f"note: complete samples without a manifest row (added by --resume): {shown}")
    gib = report.bytes_read / 2**30
    rate = f", {gib / report.elapsed_s:.2f} GiB/s" if report.elapsed_s > 0 and gib else ""
    typer.echo(
        f"checked {len(report.checked)} complete sample(s) of {store} "
        f"({'files only' if quick else f'{gib:.3f} GiB read'} in {report.elapsed_s:.1f} s{rate}): "
        f"{len(report.damaged)} damaged"
        + (f", {len(report.manifest)} manifest problem(s)" if report.manifest else "")
    )
    if report.ok:
        return
    if repair:
        redo = do_repair(store, report)
        typer.echo(
            f"repaired: {len(redo)} sample(s) marked incomplete; regenerate them with "
            f"`faket-dask generate -c CONFIG -o {store} --resume` (byte-identical)"
        )
    raise SamplesFailedError(
        f"{store} is damaged (see above)"
        + ("" if repair else f"; run `faket-dask verify {store} --repair`, then --resume")
    )


def register(app: typer.Typer) -> None:
    """Add ``verify``."""
    app.command("verify")(verify)
