"""Generate a dataset on a Dask cluster: one task per sample, a bounded window, resume, progress.

:func:`generate` is what ``faket-dask generate`` runs once it holds a client:

* the client checks the store (a new path, or ``resume=True`` on one made with the same config,
  ``n_samples`` excepted), creates the root and writes the shared metadata, checks that every
  worker sees the store, and skips samples whose ``complete`` marker exists;
* one task per sample, ``client.submit(simulate_sample, spec, key=f"faket-sample-{digest[:8]}-
  {id:06d}", retries=..., pure=False)``, inside a window of about three tasks per worker thread,
  refilled from :class:`distributed.as_completed`; each future is released once its summary is
  in the manifest;
* a failed sample (after its retries, ``KilledWorker`` included) is reported and recorded but does
  not stop the others; Ctrl-C cancels what is in flight and leaves the store resumable;
* consolidated metadata is written once at the end.

Only the client writes the root, ``samples/``, ``inputs/`` and ``manifest.jsonl``.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faket_dask.errors import ClusterError, InputError

if TYPE_CHECKING:
    from distributed import Client, Future
    from rich.console import Console

    from faket_dask.config import SimulationConfig

__all__ = [
    "ENV_FAULT",
    "RunReport",
    "changed_keys",
    "check_store",
    "dataset_digest",
    "estimate_sample_bytes",
    "generate",
    "task_key",
]

ENV_FAULT = "FAKET_DASK_FAULT"
"""Fault-injection hook for tests (read by the client, applied in the task; see pipeline)."""


@dataclass
class RunReport:
    """What a :func:`generate` call did."""

    store: str
    n_samples: int
    n_done: int = 0
    n_skipped: int = 0
    n_failed: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
    run_id: str = ""
    dry_run: bool = False
    interrupted: bool = False
    plan: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no sample failed."""
        return self.n_failed == 0 and not self.interrupted

    @property
    def samples_per_hour(self) -> float:
        """Computed samples per hour of wall time."""
        return 3600.0 * self.n_done / self.elapsed_s if self.elapsed_s > 0 else 0.0


# --------------------------------------------------------------------------------------------
# Config identity
# --------------------------------------------------------------------------------------------


def _identity_dict(config: SimulationConfig | Mapping[str, Any]) -> dict[str, Any]:
    d = dict(config) if isinstance(config, Mapping) else config.to_dict()
    d.pop("n_samples", None)
    return d


def dataset_digest(config: SimulationConfig | Mapping[str, Any]) -> str:
    """SHA-256 of the config without ``n_samples`` (a dataset may grow and keep its identity)."""
    import hashlib
    import json

    text = json.dumps(_identity_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def task_key(digest: str, sample_id: int) -> str:
    """The deterministic task key of a sample."""
    return f"faket-sample-{digest[:8]}-{int(sample_id):06d}"


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the keys whose values differ between two nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(name)
            else:
                out.extend(changed_keys(old[key], new[key], name))
        return out
    return [] if old == new else [prefix or "(config)"]


def _lookup(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return "(absent)"
        d = d[part]
    return d


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------


def _n_tilts(config: SimulationConfig) -> int:
    from faket_dask.angles import parse_angles

    specs = list(config.tilts.angle_choices) or [config.tilts.angles]
    n = 0
    for spec in specs:
        try:
            n = max(n, len(parse_angles(spec)))
        except Exception:  # a .tlt read on the workers; size unknown here
            n = max(n, 61)
    return n


def estimate_sample_bytes(config: SimulationConfig) -> dict[str, int]:
    """Uncompressed bytes one sample stores, by group (tilts, volume, tomogram)."""
    t = _n_tilts(config)
    h, w = config.tilts.shape
    item = 2 if config.output.dtype == "float16" else 4
    out = {"tilts": len(config.output.modalities) * t * h * w * item}
    z = config.sample.thickness
    vol = 0
    if config.output.save_volume:
        vol += z * h * w * (1 + 4)  # class (uint8) + instance (uint32) masks
    if config.output.save_density:
        vol += z * h * w * 4
    out["volume"] = vol
    if config.reconstruction.enabled:
        b = config.reconstruction.bin
        zt = config.reconstruction.thickness or max(1, z // b)
        out["tomogram"] = zt * (h // b) * (w // b) * (4 + 1 + 4)
    return out


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _fmt_duration(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


# --------------------------------------------------------------------------------------------
# Generate
# --------------------------------------------------------------------------------------------


def _console(progress: bool) -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, quiet=False)


def check_store(
    store: str | os.PathLike[str], config: SimulationConfig, resume: bool
) -> tuple[bool, dict[str, Any] | None]:
    """``(exists, root attrs)``; refuses an existing store without resume or a changed config.

    Cheap (reads the root's zarr.json only): the CLI calls it before it starts a cluster.
    """
    from faket_dask.io import store as st

    store = Path(store).expanduser().resolve()
    exists = store.exists() and (not store.is_dir() or any(store.iterdir()))
    if not exists:
        _check_output_folder(store.parent)
        return False, None
    if not resume:
        raise InputError(
            f"store {store} already exists; pass --resume to continue it, or choose a new path"
        )
    if not st.is_store(store):
        raise InputError(f"{store} exists but is not a faket-dask store; choose a new path")
    attrs = st.read_store_attrs(store)
    old = _identity_dict(attrs.get("config", {}))
    new = _identity_dict(config)
    diff = changed_keys(old, new)
    if diff:
        shown = "; ".join(f"{k}: {_lookup(old, k)!r} -> {_lookup(new, k)!r}" for k in diff[:5])
        more = f" (and {len(diff) - 5} more)" if len(diff) > 5 else ""
        raise InputError(
            f"cannot resume {store}: the config changed ({shown}{more}); rerun with the "
            "store's config (faket-dask info STORE shows it) or write a new store"
        )
    return True, attrs


def _check_output_folder(folder: Path) -> None:
    """Refuse a store folder that does not exist or takes no new files.

    A probe file, because ``os.access`` misses ACLs, read-only mounts and root.
    """
    import tempfile

    if not folder.is_dir():
        raise InputError(f"output folder {folder} does not exist; create it first")
    try:
        fd, probe = tempfile.mkstemp(prefix=".faket-write-check-", dir=folder)
    except OSError:
        raise InputError(
            f"output folder {folder} is not writable; choose another output path"
        ) from None
    os.close(fd)
    os.remove(probe)


def _parse_fault() -> str | None:
    value = os.environ.get(ENV_FAULT, "").strip()
    return value or None


def _print_plan(console: Console, plan: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="faket-dask generate: plan", show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("")
    for key, value in plan["rows"]:
        table.add_row(key, value)
    console.print(table)


def _make_plan(
    config: SimulationConfig,
    store: Path,
    n: int,
    done: set[int],
    cluster: str | None,
) -> dict[str, Any]:
    per = estimate_sample_bytes(config)
    per_total = sum(per.values())
    todo = n - len(done)
    rows = [
        ("store", str(store)),
        ("samples", f"{n} ({todo} to compute, {len(done)} already complete)"),
        (
            "per sample",
            f"{_fmt_bytes(per_total)} uncompressed ("
            + ", ".join(f"{k} {_fmt_bytes(v)}" for k, v in per.items() if v)
            + ")",
        ),
        ("in total", f"{_fmt_bytes(per_total * n)} ({_fmt_bytes(per_total * todo)} to write)"),
        (
            "tilts",
            f"{_n_tilts(config)} of {config.tilts.shape[0]}x{config.tilts.shape[1]}, "
            f"{config.output.dtype}, modalities {', '.join(config.output.modalities)}",
        ),
        (
            "style",
            f"{'on' if config.style.enabled else 'off'} (weights {config.style.weights}, "
            f"{config.style.precision})",
        ),
        ("cluster", cluster or "(not contacted)"),
    ]
    return {
        "n_samples": n,
        "n_todo": todo,
        "n_complete": len(done),
        "bytes_per_sample": per_total,
        "bytes_total": per_total * n,
        "bytes_by_group": per,
        "cluster": cluster,
        "rows": rows,
    }


def generate(
    config: SimulationConfig,
    store: str | os.PathLike[str],
    n_samples: int | None = None,
    client: Client | None = None,
    *,
    resume: bool = False,
    retries: int = 0,
    window: int | None = None,
    progress: bool = True,
    dry_run: bool = False,
    cluster_description: str | None = None,
    console: Console | None = None,
    task: Callable[..., dict[str, Any]] | None = None,
    preload_model: bool = True,
    base_dir: str | None = None,
    scheduler_timeout: float = 60.0,
) -> RunReport:
    """Generate ``n_samples`` samples (default ``config.n_samples``) into ``store``.

    Parameters
    ----------
    config
        The simulation config; with the dataset seed it defines every sample.
    store
        The Zarr store path (created; or continued with ``resume``).
    client
        A connected :class:`distributed.Client` (not needed for ``dry_run``).
    resume
        Continue an existing store: skip complete samples, redo the rest; ``n_samples`` may
        grow; any other config change is refused, naming the changed keys.
    retries
        Retries of a sample that raised (worker deaths count against
        ``distributed.scheduler.allowed-failures`` instead).
    window
        Tasks in flight (default: 3 per worker thread, refreshed as workers join).
    progress
        Show a rich progress bar (done / failed / skipped, samples per hour, ETA).
    dry_run
        Print the plan (samples, bytes per sample and in total, the cluster) and return.
    task
        The per-sample function (default :func:`faket_dask.pipeline.simulate_sample`).
    preload_model
        Register a :class:`~faket_dask.dist.cluster.WorkerSetup` plugin that loads VGG-19 once on
        every worker (present and future) before its first sample.
    base_dir
        Folder that relative paths in the config (templates, imports) are resolved against
        (the config file's folder).
    scheduler_timeout
        Seconds the client may stay disconnected from the scheduler (it reconnects by itself
        meanwhile) before the run stops with a :class:`~faket_dask.errors.ClusterError`.

    Returns
    -------
    RunReport
        Counts, failures, summaries and timing; ``report.ok`` is False if any sample failed.

    Raises
    ------
    InputError
        The store exists without ``resume``, or ``resume`` with a changed config.
    ClusterError
        The store is not visible from every worker.
    """
    from faket_dask.io import store as st

    console = console or _console(progress)
    n = int(n_samples if n_samples is not None else config.n_samples)
    if n < 1:
        raise InputError("--n-samples must be at least 1")
    store_path = Path(store).expanduser().resolve()
    exists, attrs = check_store(store_path, config, resume)
    digest = dataset_digest(config)
    ids = range(n)
    done = st.completed_ids(store_path, ids) if exists else set()

    if dry_run:
        plan = _make_plan(config, store_path, n, done, cluster_description)
        _print_plan(console, plan)
        return RunReport(
            store=str(store_path), n_samples=n, n_skipped=len(done), dry_run=True, plan=plan
        )
    if client is None:
        raise ValueError("generate needs a connected client unless dry_run=True")

    from faket_dask import __version__
    from faket_dask import pipeline as pl

    run_id = uuid.uuid4().hex[:12]
    if not exists:
        if not store_path.parent.is_dir():
            raise InputError(f"output folder {store_path.parent} does not exist; create it first")
        inputs = pl.resolve_inputs(config, store_path, echo=console.print)
        st.create_store(
            store_path,
            {
                "tool": "faket-dask",
                "tool_version": __version__,
                "config": config.to_dict(),
                "config_digest": config.digest(),
                "dataset_digest": digest,
                "n_samples": n,
                **inputs.to_attrs(),
            },
        )
        try:
            inputs = pl.materialize_inputs(inputs, config, store_path)
            st.update_store_attrs(store_path, **inputs.to_attrs())
        except BaseException:
            import shutil

            shutil.rmtree(store_path, ignore_errors=True)  # nothing computed yet: no half store
            raise
    else:
        assert attrs is not None
        inputs = pl.SharedInputs.from_attrs(attrs)
        st.unconsolidate(store_path)
        st.remove_partial_files(store_path)
        if n > int(attrs.get("n_samples", 0)):
            st.update_store_attrs(store_path, n_samples=n)
        _backfill_manifest(store_path, done)

    st.check_shared_filesystem(client, store_path)
    if preload_model and config.style.enabled:
        from faket_dask.dist.cluster import WorkerSetup

        client.register_plugin(
            WorkerSetup(
                weights=inputs.weights_spec,
                weights_seed=inputs.weights_seed,
                device=config.style.device,
            )
        )

    fault = _parse_fault()
    todo = [i for i in ids if i not in done]
    report = RunReport(store=str(store_path), n_samples=n, n_skipped=len(done), run_id=run_id)
    if done:
        console.print(f"resume: {len(done)} of {n} samples already complete, {len(todo)} to go")
    fn = task or pl.simulate_sample

    def make_spec(sid: int) -> Any:
        return pl.SampleSpec(
            seed=config.seed,
            sample_id=sid,
            config=config,
            store=str(store_path),
            inputs=inputs,
            run_id=run_id,
            fault=fault,
            base_dir=base_dir,
        )

    t0 = time.perf_counter()
    try:
        _run_loop(
            client,
            fn,
            make_spec,
            todo,
            digest,
            retries,
            window,
            progress,
            console,
            report,
            store_path,
            n,
            scheduler_timeout,
        )
    except ClusterError:
        report.elapsed_s = time.perf_counter() - t0
        _print_summary(console, report)
        raise
    except KeyboardInterrupt:
        report.interrupted = True
        report.elapsed_s = time.perf_counter() - t0
        console.print(
            f"[yellow]interrupted[/]: {report.n_done} sample(s) written this run; the store is "
            f"resumable: rerun with --resume"
        )
        raise
    report.elapsed_s = time.perf_counter() - t0
    # Creating any group or array briefly writes *.partial files next to the parents' metadata
    # (zarr's exclusive "set if not exists"); a worker killed then leaves one behind.
    st.remove_partial_files(store_path)
    st.update_store_attrs(
        store_path,
        last_run={
            "run_id": run_id,
            "n_samples": n,
            "done": report.n_done,
            "skipped": report.n_skipped,
            "failed": report.n_failed,
            "elapsed_s": round(report.elapsed_s, 3),
        },
    )
    st.consolidate(store_path)
    _print_summary(console, report)
    return report


def _backfill_manifest(store: Path, done: set[int]) -> None:
    """Add manifest rows for samples complete on disk but missing from the manifest.

    (A client killed after the worker marked a sample complete, before it appended the row.)
    """
    from faket_dask.io import store as st

    listed = {int(r["sample_id"]) for r in st.read_manifest(store) if r.get("status") == "ok"}
    rows = []
    for sid in sorted(done - listed):
        attrs = st.read_sample_attrs(store, sid) or {}
        summary = dict(attrs.get("summary") or {})
        summary.setdefault("sample_id", sid)
        summary["status"] = "ok"
        summary["backfilled"] = True
        rows.append(summary)
    st.write_manifest(store, rows)


def _error_text(err: BaseException | None) -> str:
    if err is None:
        return "cancelled"
    lines = str(err).strip().splitlines()
    first = lines[0] if lines else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _total_threads(client: Client) -> int:
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:
        return 1


def _run_loop(
    client: Client,
    fn: Callable[..., dict[str, Any]],
    make_spec: Callable[[int], Any],
    todo: list[int],
    digest: str,
    retries: int,
    window: int | None,
    progress: bool,
    console: Console,
    report: RunReport,
    store: Path,
    n_total: int,
    scheduler_timeout: float = 60.0,
) -> None:
    from distributed import as_completed

    from faket_dask.io import store as st

    if not todo:
        return
    queue = list(reversed(todo))  # pop() from the end gives ascending ids

    def window_size() -> int:
        return int(window) if window else max(2, 3 * _total_threads(client))

    size = window_size()
    last_refresh = time.monotonic()
    futures: dict[Future, int] = {}

    def submit_one() -> Future:
        sid = queue.pop()
        fut = client.submit(
            fn, make_spec(sid), key=task_key(digest, sid), retries=retries, pure=False
        )
        futures[fut] = sid
        return fut

    ac = as_completed(loop=client.loop)
    for _ in range(min(size, len(queue))):
        ac.add(submit_one())

    bar = _ProgressBar(console, n_total, report.n_skipped, enabled=progress)
    pending_rows: list[dict[str, Any]] = []
    last_flush = time.monotonic()
    t_start = time.perf_counter()
    watch = _SchedulerWatch(
        client, scheduler_timeout, warn=lambda m: bar.log(f"[yellow]warning[/]: {m}")
    )

    def refill() -> bool:
        """Submit up to the window while connected; False when nothing is left to submit."""
        if client.status == "running":
            while queue and len(futures) < size:
                ac.add(submit_one())
        return bool(queue)

    def requeue() -> None:
        """A restarted scheduler does not know our futures: submit their samples again."""
        bar.log(
            f"[yellow]new scheduler[/]: submitting the {len(futures)} sample(s) in flight again"
        )
        for fut, sid in futures.items():
            fut.release()
            queue.append(sid)
        futures.clear()
        ac.clear()
        queue.sort(reverse=True)

    try:
        with bar:
            for fut in _completed(ac, watch, refill, requeue):
                sid = futures.pop(fut)
                if fut.status == "cancelled" and client.status != "running":
                    # cut off from the scheduler: not a failure of the sample; --resume redoes it
                    fut.release()
                    queue.append(sid)
                    continue
                if fut.status == "finished":
                    try:
                        summary = dict(fut.result())
                    except Exception as err:  # pragma: no cover - finished futures return
                        summary = {"sample_id": sid, "status": "failed", "error": _error_text(err)}
                else:
                    err = None
                    with contextlib.suppress(Exception):
                        err = fut.exception(timeout=5)
                    summary = {"sample_id": sid, "status": "failed", "error": _error_text(err)}
                fut.release()
                summary.setdefault("sample_id", sid)
                summary.setdefault("status", "ok")
                if summary["status"] == "ok":
                    report.n_done += 1
                    report.summaries.append(summary)
                else:
                    report.n_failed += 1
                    report.failures.append(summary)
                    bar.log(f"[red]sample {sid} failed[/]: {summary['error']}")
                pending_rows.append(summary)
                now = time.monotonic()
                if len(pending_rows) >= 64 or now - last_flush > 1.0 or not futures:
                    st.write_manifest(store, pending_rows)
                    pending_rows = []
                    last_flush = now
                bar.update(report, time.perf_counter() - t_start)
                if now - last_refresh > 2.0 and not window and client.status == "running":
                    size = window_size()
                    last_refresh = now
                refill()
    except KeyboardInterrupt:
        if futures:
            with contextlib.suppress(Exception):
                client.cancel(list(futures), force=True)
        raise
    finally:
        st.write_manifest(store, pending_rows)


class _SchedulerWatch:
    """Notice a lost or replaced scheduler while the run waits for results.

    A dead scheduler leaves the futures pending forever; the client keeps trying to reconnect,
    so its status tells. :meth:`check` raises a :class:`ClusterError` once the client has
    been cut off for ``timeout`` s, and returns True when it has reconnected to another
    scheduler (one restarted at the same address), whose futures the old one's are not.
    """

    def __init__(
        self,
        client: Client,
        timeout: float,
        every: float = 2.0,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.timeout = float(timeout)
        self.every = float(every)
        self.warn = warn
        self.since: float | None = None
        self.no_workers_since: float | None = None
        self.warned = False
        self.last_id_check = time.monotonic()
        self.scheduler_id = self._poll_scheduler()

    def _poll_scheduler(self) -> str | None:
        """The scheduler's id (``None`` if unreachable); also keeps track of the worker count."""
        try:
            info = self.client.scheduler_info(n_workers=1)
        except Exception:  # unreachable right now: the status check handles that
            return None
        self._watch_workers(int(info.get("n_workers", 1)))
        return str(info.get("id"))

    def _watch_workers(self, n: int) -> None:
        # No worker is not an error (an adaptive cluster may wait for its jobs), but say so.
        if n:
            self.no_workers_since, self.warned = None, False
            return
        now = time.monotonic()
        if self.no_workers_since is None:
            self.no_workers_since = now
        elif now - self.no_workers_since > self.timeout and not self.warned and self.warn:
            self.warned = True
            self.warn(
                f"no worker for over {self.timeout:g} s: waiting for workers to join (or stop "
                "with Ctrl-C and rerun with --resume later)"
            )

    def check(self) -> bool:
        now = time.monotonic()
        if self.client.status == "running":
            self.since = None
            if now - self.last_id_check < self.every:
                return False
            self.last_id_check = now
            current = self._poll_scheduler()
            if current and self.scheduler_id and current != self.scheduler_id:
                self.scheduler_id = current
                return True
            self.scheduler_id = self.scheduler_id or current
            return False
        if self.since is None:
            self.since = now
        elif now - self.since > self.timeout:
            address = getattr(self.client.scheduler, "address", None) or "the scheduler"
            raise ClusterError(
                f"lost the connection to {address} for over {self.timeout:g} s (the scheduler "
                "died or is unreachable); complete samples are kept: start the cluster again "
                "and rerun with --resume"
            )
        return False


def _completed(
    ac: Any,
    watch: _SchedulerWatch,
    refill: Callable[[], bool],
    requeue: Callable[[], None],
    poll: float = 0.05,
) -> Iterator[Future]:
    """Futures of ``ac`` as they complete, checking the scheduler connection while none is.

    When nothing is in flight, ``refill()`` submits more (it returns False when nothing is
    left). On a new scheduler, ``requeue()`` puts back what was in flight, to submit again.
    """
    while True:
        batch = ac.next_batch(block=False)
        if batch:
            yield from batch
            continue
        if ac.is_empty() and not refill():
            return
        if watch.check():  # raises once the scheduler has been gone too long
            requeue()
        time.sleep(poll)


class _ProgressBar:
    """A rich progress bar: done, failed, skipped, samples per hour, ETA."""

    def __init__(self, console: Console, total: int, skipped: int, enabled: bool) -> None:
        self.console = console
        self.enabled = enabled
        self.total = total
        self.skipped = skipped
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _ProgressBar:
        if not self.enabled:
            return self
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

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
            total=self.total,
            completed=self.skipped,
            done=0,
            failed=0,
            skipped=self.skipped,
            rate="-",
            eta="-",
        )
        return self

    def update(self, report: RunReport, elapsed: float) -> None:
        if self._progress is None:
            return
        finished = report.n_done + report.n_failed
        rate = report.n_done / elapsed if elapsed > 0 else 0.0
        remaining = self.total - self.skipped - finished
        eta = _fmt_duration(remaining / (finished / elapsed)) if finished and elapsed else "-"
        self._progress.update(
            self._task,
            completed=self.skipped + finished,
            done=report.n_done,
            failed=report.n_failed,
            rate=f"{rate * 3600:.0f} samples/h",
            eta=eta,
        )

    def log(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            self.console.print(text)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def _print_summary(console: Console, report: RunReport) -> None:
    from rich.table import Table

    table = Table(title="faket-dask generate: summary", title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("store", report.store)
    table.add_row("samples", str(report.n_samples))
    table.add_row("computed", str(report.n_done))
    table.add_row("skipped (already complete)", str(report.n_skipped))
    table.add_row("failed", f"[red]{report.n_failed}[/]" if report.n_failed else "0")
    table.add_row("wall time", _fmt_duration(report.elapsed_s))
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
