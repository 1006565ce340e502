"""CLI command: info, what a dataset store holds (a table, or JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def info(
    store: Annotated[Path, typer.Argument(help="A dataset store made by `generate`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    show_config: Annotated[
        bool, typer.Option("--config/--no-config", help="Print the config.")
    ] = True,
) -> None:
    """What a store holds: samples complete / failed / missing, weights, inputs, the config."""
    from faket_dask.read.export import store_info

    data = store_info(store)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    import yaml
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(
        title=f"faket-dask store {data['store']}", show_header=False, title_justify="left"
    )
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("tool version", str(data["tool_version"]))
    table.add_row("created", str(data["created_at"]))
    table.add_row("samples", f"{data['complete']} of {data['n_samples']} complete")
    if data["failed_ids"]:
        table.add_row("failed", _ids(data["failed_ids"]))
    if data["missing_ids"]:
        table.add_row("not yet made", _ids(data["missing_ids"]))
    w = data.get("weights") or {}
    if w:
        line = f"{w.get('name')} (sha256 {w.get('sha256') or '-'}, requested {w.get('requested')})"
        if w.get("fallback"):
            line = f"[bold red]{line}: FELL BACK TO RANDOM WEIGHTS[/]"
        table.add_row("VGG-19 weights", line)
    for i, r in enumerate(data.get("style_references") or []):
        table.add_row(
            f"style reference {i}",
            f"{r.get('spec')} {r.get('shape')} sha256 {str(r.get('sha256'))[:16]}",
        )
    for i, m in enumerate(data.get("noise_models") or []):
        table.add_row(f"noise model {i}", f"{m.get('spec')} sha256 {str(m.get('sha256'))[:16]}")
    if data.get("last_run"):
        lr = data["last_run"]
        table.add_row(
            "last run",
            f"{lr.get('done')} computed, {lr.get('skipped')} skipped, "
            f"{lr.get('failed')} failed in {lr.get('elapsed_s')} s",
        )
    table.add_row("size on disk", f"{data['bytes_on_disk'] / 2**20:.1f} MiB")
    table.add_row("config digest", str(data["config_digest"]))
    console.print(table)
    if show_config:
        console.print("config:", style="bold")
        console.print(yaml.safe_dump(data["config"], sort_keys=False), markup=False)


def _ids(ids: list[int], limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return f"{shown} (+{len(ids) - limit} more)" if len(ids) > limit else shown


def register(app: typer.Typer) -> None:
    """Add ``info`` to the app."""
    app.command("info")(info)
