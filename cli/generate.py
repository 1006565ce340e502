"""CLI command: generate (the main job): a dataset store on a Dask cluster."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand

from faket_dask.errors import InputError, SamplesFailedError

from ._common import ProfileOpt, SchedulerFileOpt, SchedulerOpt, WorkerTimeoutOpt, on_cluster

if TYPE_CHECKING:
    from collections.abc import Callable

    from faket_dask.config import SimulationConfig
    from faket_dask.dist.plan import RunReport

NWorkersOpt = Annotated[
    int | None,
    typer.Option("--n-workers", help="Workers of the embedded local cluster (default: auto)."),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads-per-worker",
        help="Samples at a time per worker of the embedded local cluster (default 1). On a "
        "GPU, 2 builds one sample on the CPU while another uses the GPU.",
    ),
]


OutputOpt = Annotated[Path, typer.Option("-o", "--output", help="The dataset store (.zarr).")]
ConfigOpt = Annotated[Path | None, typer.Option("-c", "--config", help="Simulation config (YAML).")]
NSamplesOpt = Annotated[
    int | None, typer.Option("--n-samples", help="Samples to make (default: the config's).")
]
OverrideOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--override",
        help="KEY=VALUE (YAML value) over the config, repeatable: tilts.shape=[64,64], "
        "sample.particles.0.count=2.",
    ),
]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue an existing store: skip complete samples.")
]
RetriesOpt = Annotated[int, typer.Option("--retries", help="Retries of a failing sample.")]
WindowOpt = Annotated[
    int | None, typer.Option("--window", help="Samples in flight (default: 3 per thread).")
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Print the plan and output size; compute nothing.")
]
DemoOpt = Annotated[
    str | None,
    typer.Option(
        "--demo",
        metavar="[small|full]",
        help="The built-in demo: built-in templates and reference, ImageNet weights if "
        "available, else random (loudly). `--demo` or `--demo full`: up to 4 samples of 31 "
        "tilts at 128^2 (minutes); `--demo small`: 2 samples of 21 tilts at 64^2 (under a "
        "minute on 2 cores).",
    ),
]
SmallOpt = Annotated[
    bool, typer.Option("--small", help="With --demo: the same as `--demo small`.")
]
#: The sizes ``--demo`` takes (``--demo`` alone is ``full``).
DEMO_SIZES = ("small", "full")
ProgressOpt = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")
]


def generate(
    ctx: typer.Context,
    output: OutputOpt,
    config: ConfigOpt = None,
    n_samples: NSamplesOpt = None,
    override: OverrideOpt = None,
    scheduler: SchedulerOpt = None,
    scheduler_file: SchedulerFileOpt = None,
    cluster_profile: ProfileOpt = None,
    resume: ResumeOpt = False,
    retries: RetriesOpt = 0,
    worker_timeout: WorkerTimeoutOpt = 60.0,
    n_workers: NWorkersOpt = None,
    threads_per_worker: ThreadsOpt = None,
    window: WindowOpt = None,
    dry_run: DryRunOpt = False,
    demo: DemoOpt = None,
    small: SmallOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Generate labeled, styled tilt-series into one Zarr store, on a Dask cluster.

    One task per sample; resumable (--resume); a failed sample does not stop the others
    (exit code 1 if any failed; 3 if the cluster cannot be reached).
    """
    _check_counts(n_workers=n_workers, threads_per_worker=threads_per_worker, window=window)
    if demo is not None and demo not in DEMO_SIZES:
        raise InputError(f"--demo takes a size: `--demo small` or `--demo full` (got {demo!r})")
    if small and demo is None:
        raise InputError("--small sizes the built-in demo: use `--demo small`")
    small = small or demo == "small"
    cfg, base_dir = _checked_config(
        config, demo is not None, output, n_samples, retries, override, small
    )
    n_samples = cfg.n_samples if demo is not None else n_samples
    from faket_dask.dist.budget import check_budget  # zarr only: --help stays fast
    from faket_dask.dist.plan import GenerateOptions, check_store, plan_run
    from faket_dask.io.lock import store_lock

    console = Console(stderr=True, highlight=False)
    cluster = (scheduler, scheduler_file, cluster_profile)
    local = not (on_cluster(*cluster) or os.environ.get("DASK_SCHEDULER_ADDRESS"))
    warn = functools.partial(console.print, markup=False)
    if not dry_run:  # one writer at a time; held until the command ends (re-entered by the run)
        ctx.with_resource(store_lock(output, "faket-dask generate"))
    check_store(output, cfg, resume)  # before any cluster starts (and before torch loads)
    check_budget(
        cfg, n_samples or cfg.n_samples, output, local=local, warn=warn, dry_run=dry_run
    )
    # torch, dask: loaded once the input is checked, so that bad input fails fast
    from faket_dask.dist.cluster import connect, resolve_source

    from ._progress import GenerateView, print_plan

    if dry_run:
        where = resolve_source(*cluster, n_workers, threads_per_worker).describe()
        plan = GenerateOptions(n_samples, resume=resume, dry_run=True, cluster_description=where)
        print_plan(console, plan_run(cfg, output, plan).plan)
        return
    view = GenerateView(console, progress)
    opts = GenerateOptions(
        n_samples, resume=resume, retries=retries, window=window, base_dir=base_dir,
        scheduler_timeout=worker_timeout, on_event=view,
    )
    echo = functools.partial(console.print, markup=False)
    try:
        with connect(
            *cluster, worker_timeout, n_workers, threads_per_worker=threads_per_worker, echo=echo
        ) as client:
            # torch and the pipeline: loaded once a cluster answers (an unreachable one fails fast)
            from faket_dask.dist.runner import generate as run_generate

            report = run_generate(cfg, output, client, opts)
    finally:
        view.close()
    _outcome(report, output, echo)



def _outcome(report: RunReport, output: Path, echo: Callable[[str], object]) -> None:
    """What the run's end means for the user: the next step, or why it failed (exit 2 or 1)."""
    if report.config_error is not None:
        raise InputError(
            f"all {report.n_failed} samples failed on the config: {report.config_error}. A "
            f"rerun fails the same way: change the config, then generate into a new store "
            f"(or delete {output})"
        )
    if report.n_done:
        echo(f"next: faket-dask report {output} -o report.html   (gallery, counts, realism)")
    if report.n_failed:
        raise SamplesFailedError(
            f"{report.n_failed} of {report.n_samples} samples failed (see above and "
            f"{output}/manifest.jsonl); rerun with --resume to retry them"
        )


def _check_counts(**counts: int | None) -> None:
    """``--n-workers``, ``--threads-per-worker``, ``--window``: at least 1 when given."""
    for name, value in counts.items():
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} must be at least 1 (got {value})")


def _checked_config(
    config: Path | None,
    demo: bool,
    output: Path,
    n_samples: int | None,
    retries: int,
    override: list[str] | None = None,
    small: bool = False,
) -> tuple[SimulationConfig, str | None]:
    """Check the options; the config (-c or --demo) and the folder its paths are relative to."""
    if demo and config is not None:
        raise InputError("give -c CONFIG or --demo, not both")
    if demo and override:
        raise InputError("--override changes a config file: give it with -c CONFIG")
    if not demo and config is None:
        raise InputError("give a config with -c CONFIG.yaml (or try --demo)")
    if output.suffix.lower() != ".zarr":
        raise InputError(f"the store {output} must be a .zarr path")
    if n_samples is not None and n_samples < 1:
        raise InputError("--n-samples must be at least 1")
    if retries < 0:
        raise InputError("--retries must be >= 0")
    # numpy, pydantic: loaded when the command runs, so that --help stays fast
    from faket_dask.config import MAX_SAMPLES, load_config

    if n_samples is not None and n_samples > MAX_SAMPLES:
        raise InputError(
            f"--n-samples {n_samples} exceeds the limit of {MAX_SAMPLES} samples per store "
            "(six-digit sample folders); split the dataset over several stores"
        )
    from faket_dask.demo import demo_config

    if demo or config is None:
        return demo_config(n_samples, small), None
    return load_config(config, override or ()), str(config.resolve().parent)


def demo_size_argv(args: list[str]) -> list[str]:
    """``generate``'s arguments with ``--demo``'s optional size word attached.

    ``--demo small`` becomes ``--demo=small`` and a bare ``--demo`` (followed by an option or
    nothing) becomes ``--demo=full``; ``generate`` has no positional arguments, so a word after
    ``--demo`` can only be its size (a wrong word is named by the command, exit 2). Arguments
    after ``--`` are left alone.
    """
    out: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            out += [arg, *rest]
            break
        if arg != "--demo":
            out.append(arg)
            continue
        word = next(rest, None)
        if word is None or word.startswith("-"):
            out += ["--demo=full", *([] if word is None else [word])]
        else:
            out.append(f"--demo={word}")
    return out


class DemoSizeCommand(TyperCommand):
    """``generate``'s click command: ``--demo`` takes an optional size word.

    A click option with an optional value would swallow the option that follows it.
    """

    # ctx is typer's vendored click Context (typer._click, not the click package): Any here
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Attach ``--demo``'s size word, then parse as usual."""
        return super().parse_args(ctx, demo_size_argv(args))


def register(app: typer.Typer) -> None:
    """Add ``generate`` to the app."""
    app.command("generate", cls=DemoSizeCommand)(generate)
