"""How ``generate`` looks: the plan, the progress bar, warnings, failures and the summary.

The runner reports events (:class:`faket_dask.dist.runner.RunEvent`); :class:`GenerateView`
renders them with rich on stderr.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from faket_dask.dist.plan import RunReport, fmt_duration

if TYPE_CHECKING:
    from faket_dask.dist.plan import RunEvent


def print_plan(console: Console, plan: dict[str, Any]) -> None:
    """The dry-run plan as a two-column table."""
    table = Table(title="faket-dask generate: plan", show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("")
    for key, value in plan["rows"]:
        table.add_row(key, value)
    console.print(table)


def print_summary(console: Console, report: RunReport) -> None:
    """What a run did: counts, wall time, throughput, device, the first failures."""
    table = Table(title="faket-dask generate: summary", title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("store", report.store)
    table.add_row("samples", str(report.n_samples))
    table.add_row("computed", str(report.n_done))
    table.add_row("skipped (already complete)", str(report.n_skipped))
    table.add_row("failed", f"[red]{report.n_failed}[/]" if report.n_failed else "0")
    table.add_row("wall time", fmt_duration(report.elapsed_s))
    if report.n_done:
        table.add_row("throughput", f"{report.samples_per_hour:.0f} samples/h")
        totals = [s.get("timings", {}).get("total") for s in report.summaries]
        totals = [t for t in totals if isinstance(t, int | float)]
        if totals:
            table.add_row("task time per sample", f"{sum(totals) / len(totals):.2f} s (mean)")
        devices = sorted({str(s.get("device")) for s in report.summaries if s.get("device")})
        if devices:
            table.add_row("device", ", ".join(devices))
    console.print(table)
    for f in report.failures[:10]:
        console.print(f"[red]failed[/] sample {f['sample_id']}: {f.get('error')}")
    if len(report.failures) > 10:
        console.print(f"... and {len(report.failures) - 10} more failures (see manifest.jsonl)")


class GenerateView:
    """Render a run's events: a rich progress bar (done, failed, skipped, rate, ETA) and lines.

    Call it with each event (it is the runner's ``on_event``); ``close()`` ends the bar.
    """

    def __init__(self, console: Console, progress: bool) -> None:
        self.console = console
        self.enabled = progress
        self._progress: Progress | None = None
        self._task: Any = None

    def __call__(self, event: RunEvent) -> None:
        kind, report = event.kind, event.report
        if kind == "alert":
            self.console.print(f"[bold red]{escape(event.message)}[/]")
        elif kind == "skipped":
            self.console.print(f"resume: {event.message}")
        elif kind == "started":
            self._open(report.n_samples, report.n_skipped)
        elif kind in ("done", "failed"):
            if kind == "failed":
                self._log(f"[red]sample {event.sample_id} failed[/]: {event.message}")
            self._update(report, event.elapsed_s)
        elif kind == "warning":
            self._log(f"[yellow]warning[/]: {event.message}")
        elif kind == "rescheduled":
            self._log(f"[yellow]new scheduler[/]: {event.message}")
        elif kind == "finished":
            self.close()
            print_summary(self.console, report)
        elif kind == "interrupted":
            self.close()
            self.console.print(
                f"[yellow]interrupted[/]: {report.n_done} sample(s) written this run; the store "
                f"is resumable: rerun with --resume"
            )

    def _open(self, total: int, skipped: int) -> None:
        if not self.enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]generate"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "[green]{task.fields[done]} done[/] [red]{task.fields[failed]} failed[/] "
                "[dim]{task.fields[skipped]} skipped[/]"
            ),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA {task.fields[eta]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.__enter__()
        self._task = self._progress.add_task(
            "generate",
            total=total,
            completed=skipped,
            done=0,
            failed=0,
            skipped=skipped,
            rate="-",
            eta="-",
        )

    def _update(self, report: RunReport, elapsed: float) -> None:
        if self._progress is None:
            return
        finished = report.n_done + report.n_failed
        rate = report.n_done / elapsed if elapsed > 0 else 0.0
        remaining = report.n_samples - report.n_skipped - finished
        eta = fmt_duration(remaining / (finished / elapsed)) if finished and elapsed else "-"
        self._progress.update(
            self._task,
            completed=report.n_skipped + finished,
            done=report.n_done,
            failed=report.n_failed,
            rate=f"{rate * 3600:.0f} samples/h",
            eta=eta,
        )

    def _log(self, text: str) -> None:
        console = self._progress.console if self._progress is not None else self.console
        console.print(text)

    def close(self) -> None:
        """End the progress bar (if one is shown)."""
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
            self._progress = None
