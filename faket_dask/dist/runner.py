"""Generate a dataset on a Dask cluster: one task per sample, a bounded window, resume, events.

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

Only the client writes the root, ``samples/``, ``inputs/`` and ``manifest.jsonl``. The runner
reports, it does not display: it calls ``options.on_event`` with a :class:`RunEvent` (started,
done, failed, skipped, warnings, finished, with timings) and the CLI renders them.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distributed import as_completed

from faket_dask import __version__
from faket_dask import pipeline as pl
from faket_dask.config import SimulationConfig
from faket_dask.dist.plan import (
    GenerateOptions,
    RunEvent,
    RunReport,
    changed_keys,
    check_shared_filesystem,
    check_store,
    checked_run,
    dataset_digest,
    estimate_sample_bytes,
    plan_run,
    task_key,
)
from faket_dask.dist.plugins import WorkerSetup
from faket_dask.errors import ClusterError, InputError, SamplesFailedError
from faket_dask.io import store as st
from faket_dask.io.lock import store_lock
from faket_dask.io.verify import check_sample
from faket_dask.pipeline.inputs import WeightsFallbackWarning
from faket_dask.stages.sample import BUILDER_VERSION

if TYPE_CHECKING:
    from distributed import Client, Future

__all__ = [
    "ENV_FAULT",
    "GenerateOptions",
    "RunEvent",
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

def _parse_fault() -> str | None:
    value = os.environ.get(ENV_FAULT, "").strip()
    return value or None


def _holding_store_lock(fn: Callable[..., RunReport]) -> Callable[..., RunReport]:
    """Run ``fn`` holding the store's lock (:mod:`faket_dask.io.lock`), except for a dry run."""

    @functools.wraps(fn)
    def locked(
        config: SimulationConfig,
        store: str | os.PathLike[str],
        client: Client | None = None,
        options: GenerateOptions | None = None,
    ) -> RunReport:
        if options is not None and options.dry_run:
            return fn(config, store, client, options)
        with store_lock(store, "generate"):
            return fn(config, store, client, options)

    return locked


@_holding_store_lock
def generate(
    config: SimulationConfig,
    store: str | os.PathLike[str],
    client: Client | None = None,
    options: GenerateOptions | None = None,
) -> RunReport:
    """Generate ``options.n_samples`` samples (default ``config.n_samples``) into ``store``.

    Parameters
    ----------
    config
        The simulation config; with the dataset seed it defines every sample.
    store
        The Zarr store path (created; or continued with ``options.resume``).
    client
        A connected :class:`distributed.Client` (not needed for ``options.dry_run``).
    options
        Resume, retries, window, dry run, the task, events: :class:`GenerateOptions`.

    Returns
    -------
    RunReport
        Counts, failures, summaries and timing; ``report.ok`` is False if any sample failed.

    Raises
    ------
    InputError
        The store exists without ``resume``, or ``resume`` with a changed config.
    StoreLockedError
        Another run holds the store's lock (:mod:`faket_dask.io.lock`).
    ClusterError
        The store is not visible from every worker, or the scheduler is gone too long.
    """
    opts = options or GenerateOptions()
    if opts.dry_run:
        return plan_run(config, store, opts)
    n, store_path, exists, attrs = checked_run(config, store, opts)
    done = st.completed_ids(store_path, range(n)) if exists else set()
    if client is None:
        raise ValueError("generate needs a connected client unless dry_run=True")
    run = _Run(config, store_path, n, done, opts)
    inputs = run.open_store(exists, attrs)
    check_shared_filesystem(client, store_path)
    if opts.preload_model and config.style.enabled:
        client.register_plugin(
            WorkerSetup(
                weights=inputs.weights_spec,
                weights_seed=inputs.weights_seed,
                device=config.style.device,
            )
        )
    return run.execute(client, inputs)


@dataclass
class _Run:
    """One :func:`generate` call once the store is checked: its store, its samples, its report."""

    config: SimulationConfig
    store: Path
    n: int
    done: set[int]
    opts: GenerateOptions
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    report: RunReport = field(init=False)
    started_at: str | None = None  # ISO time (UTC) when the samples started to be submitted

    def __post_init__(self) -> None:
        self.report = RunReport(
            store=str(self.store), n_samples=self.n, n_skipped=len(self.done), run_id=self.run_id
        )

    def open_store(self, exists: bool, attrs: dict[str, Any] | None) -> pl.SharedInputs:
        """Create the store with its shared inputs, or reopen one to continue it."""
        if exists:
            assert attrs is not None
            st.unconsolidate(self.store)
            st.remove_partial_files(self.store)
            if self.n > int(attrs.get("n_samples", 0)):
                st.update_store_attrs(self.store, n_samples=self.n)
            self.recheck_skipped()
            _backfill_manifest(self.store, self.done)
            return pl.SharedInputs.from_attrs(attrs)
        if not self.store.parent.is_dir():
            raise InputError(f"output folder {self.store.parent} does not exist; create it first")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", WeightsFallbackWarning)
            inputs = pl.resolve_inputs(self.config, self.store)
        for w in caught:  # the loud ones become alerts; the others are warned again
            if issubclass(w.category, WeightsFallbackWarning):
                self.opts.emit("alert", self.report, message=str(w.message))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        st.create_store(
            self.store,
            {
                "tool": "faket-dask",
                "tool_version": __version__,
                "sample_builder": BUILDER_VERSION,
                "config": self.config.to_dict(),
                "config_digest": self.config.digest(),
                "dataset_digest": dataset_digest(self.config),
                "n_samples": self.n,
                **inputs.to_attrs(),
            },
        )
        try:
            inputs = pl.materialize_inputs(inputs, self.config, self.store)
            st.update_store_attrs(self.store, **inputs.to_attrs())
        except BaseException:
            shutil.rmtree(self.store, ignore_errors=True)  # nothing computed yet: no half store
            raise
        return inputs

    def recheck_skipped(self) -> None:
        """The cheap check of the samples ``--resume`` would skip (every recorded file there,
        with its size): a damaged one is marked incomplete, recorded, and done again."""
        damaged = {}
        for sid in sorted(self.done):
            problems, _ = check_sample(self.store, sid, full=False)
            if problems:
                damaged[sid] = "; ".join(problems)
        for sid, why in damaged.items():
            self.opts.emit(
                "warning", self.report, message=f"damaged: sample {sid} ({why}); computing it again"
            )
            st.mark_incomplete(self.store, sid, why)
        rows = [{"sample_id": s, "status": "damaged", "error": w} for s, w in damaged.items()]
        st.write_manifest(self.store, rows)
        self.done -= set(damaged)
        self.report.n_skipped = len(self.done)

    def spec(self, inputs: pl.SharedInputs, fault: str | None, sid: int) -> pl.SampleSpec:
        """What the task of sample ``sid`` gets."""
        return pl.SampleSpec(
            seed=self.config.seed,
            sample_id=sid,
            config=self.config,
            store=str(self.store),
            inputs=inputs,
            run_id=self.run_id,
            fault=fault,
            base_dir=self.opts.base_dir,
        )

    def execute(self, client: Client, inputs: pl.SharedInputs) -> RunReport:
        """Run every sample not yet complete; close the store; the report."""
        todo = [i for i in range(self.n) if i not in self.done]
        report, opts = self.report, self.opts
        if self.done:
            opts.emit(
                "skipped",
                report,
                message=f"{len(self.done)} of {self.n} samples already complete, "
                f"{len(todo)} to go",
            )
        fault = _parse_fault()
        t0 = time.perf_counter()
        self.started_at = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
        try:
            _SampleLoop(client, self, lambda sid: self.spec(inputs, fault, sid)).run(todo)
        except ClusterError:
            report.elapsed_s = time.perf_counter() - t0
            opts.emit("finished", report)
            raise
        except KeyboardInterrupt:
            report.interrupted = True
            report.elapsed_s = time.perf_counter() - t0
            opts.emit("interrupted", report)
            raise
        except OSError as err:  # the manifest cannot be written (a full disk)
            report.elapsed_s = time.perf_counter() - t0
            raise _disk_error(opts, report, err) from None
        report.elapsed_s = time.perf_counter() - t0
        try:
            self.close()
        except OSError as err:  # a full or read-only disk: the samples are safe, say so
            raise _disk_error(opts, report, err) from None
        opts.emit("finished", report)
        return report

    def close(self) -> None:
        """Record the run in the root attrs and consolidate the metadata."""
        # Creating any group or array briefly writes *.partial files next to the parents'
        # metadata (zarr's exclusive "set if not exists"); a worker killed then leaves one.
        st.remove_partial_files(self.store)
        r = self.report
        st.update_store_attrs(
            self.store,
            last_run={
                "run_id": self.run_id,
                "n_samples": self.n,
                "done": r.n_done,
                "skipped": r.n_skipped,
                "failed": r.n_failed,
                "elapsed_s": round(r.elapsed_s, 3),
                # the report's throughput uses these, so that it agrees with generate's
                "started_at": self.started_at,
                "finished_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
            },
        )
        st.consolidate(self.store)


def _disk_error(opts: GenerateOptions, report: RunReport, err: OSError) -> SamplesFailedError:
    """The run's summary, then one line: what failed and that ``--resume`` goes on."""
    opts.emit("finished", report)
    return SamplesFailedError(
        f"cannot write the store ({err.strerror or err}): {report.n_done} sample(s) computed "
        "this run, complete ones are kept; free space (or fix the disk) and rerun with --resume"
    )


def _backfill_manifest(store: Path, done: set[int]) -> None:
    """Add manifest rows for samples complete on disk but missing from the manifest.

    (A client killed after the worker marked a sample complete, before it appended the row.)
    """
    latest = st.latest_status(st.read_manifest(store))
    listed = {sid for sid, status in latest.items() if status == "ok"}
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


class _SampleLoop:
    """Submit samples inside a window, collect them as they complete, write the manifest.

    The window (default 3 tasks per worker thread) is refreshed every 2 s as workers come and go;
    manifest rows are flushed every 64 rows or 1 s; a lost scheduler is watched by
    :class:`_SchedulerWatch`, and a new one gets the samples in flight again.
    """

    def __init__(self, client: Client, run: _Run, make_spec: Callable[[int], Any]) -> None:
        self.client = client
        self.run_ = run
        self.opts = run.opts
        self.report = run.report
        self.make_spec = make_spec
        self.fn = self.opts.task or pl.simulate_sample
        self.digest = dataset_digest(run.config)
        self.queue: list[int] = []
        self.futures: dict[Future, int] = {}
        self.ac: Any = None
        self.size = self._window_size()
        self.last_refresh = time.monotonic()
        self.pending_rows: list[dict[str, Any]] = []
        self.last_flush = time.monotonic()
        self.t_start = time.perf_counter()

    def _window_size(self) -> int:
        if self.opts.window:
            return int(self.opts.window)
        return max(2, 3 * _total_threads(self.client))

    def _submit_one(self) -> Future:
        sid = self.queue.pop()
        fut = self.client.submit(
            self.fn,
            self.make_spec(sid),
            key=task_key(self.digest, sid),
            retries=self.opts.retries,
            pure=False,
        )
        self.futures[fut] = sid
        return fut

    def refill(self) -> bool:
        """Submit up to the window while connected; False when nothing is left to submit."""
        if self.client.status == "running":
            while self.queue and len(self.futures) < self.size:
                self.ac.add(self._submit_one())
        return bool(self.queue)

    def requeue(self) -> None:
        """A restarted scheduler does not know our futures: submit their samples again."""
        self.opts.emit(
            "rescheduled",
            self.report,
            message=f"submitting the {len(self.futures)} sample(s) in flight again",
        )
        for fut, sid in self.futures.items():
            fut.release()
            self.queue.append(sid)
        self.futures.clear()
        self.ac.clear()
        self.queue.sort(reverse=True)

    def run(self, todo: list[int]) -> None:
        """Compute the samples ``todo`` (ascending ids first)."""
        if not todo:
            return
        self.queue = list(reversed(todo))  # pop() from the end gives ascending ids
        self.ac = as_completed(loop=self.client.loop)
        for _ in range(min(self.size, len(self.queue))):
            self.ac.add(self._submit_one())
        self.opts.emit("started", self.report)
        self.t_start = time.perf_counter()
        watch = _SchedulerWatch(
            self.client,
            self.opts.scheduler_timeout,
            warn=lambda m: self.opts.emit("warning", self.report, message=m),
        )
        try:
            for fut in _completed(self.ac, watch, self.refill, self.requeue):
                if not self._collect(fut):
                    continue
                self._flush_manifest()
                self._refresh_window()
                self.refill()
        except KeyboardInterrupt:
            if self.futures:
                with contextlib.suppress(Exception):
                    self.client.cancel(list(self.futures), force=True)
            raise
        finally:
            st.write_manifest(self.run_.store, self.pending_rows)
            self.pending_rows = []

    def _collect(self, fut: Future) -> bool:
        """Count one completed future in the report; False when cut off (its sample goes back)."""
        sid = self.futures.pop(fut)
        if fut.status == "cancelled" and self.client.status != "running":
            # cut off from the scheduler: not a failure of the sample; --resume redoes it
            fut.release()
            self.queue.append(sid)
            return False
        summary = _summary_of(fut, sid)
        fut.release()
        elapsed = time.perf_counter() - self.t_start
        if summary["status"] == "ok":
            self.report.n_done += 1
            self.report.summaries.append(summary)
            self.opts.emit("done", self.report, sample_id=sid, elapsed_s=elapsed)
        else:
            self.report.n_failed += 1
            self.report.failures.append(summary)
            self.opts.emit(
                "failed", self.report, sample_id=sid, message=summary["error"], elapsed_s=elapsed
            )
        self.pending_rows.append(summary)
        return True

    def _flush_manifest(self) -> None:
        now = time.monotonic()
        if len(self.pending_rows) >= 64 or now - self.last_flush > 1.0 or not self.futures:
            st.write_manifest(self.run_.store, self.pending_rows)
            self.pending_rows = []
            self.last_flush = now

    def _refresh_window(self) -> None:
        now = time.monotonic()
        stale = now - self.last_refresh > 2.0
        if stale and not self.opts.window and self.client.status == "running":
            self.size = self._window_size()
            self.last_refresh = now


def _summary_of(fut: Future, sid: int) -> dict[str, Any]:
    """The summary a finished task returned, or a failure row naming its error."""
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
        # bad input inside the sample (a particle that cannot be placed): a rerun fails again
        summary["input_error"] = isinstance(err, InputError)
    summary.setdefault("sample_id", sid)
    summary.setdefault("status", "ok")
    return summary


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
