"""A run's plan and identity: what a store is, whether it may be continued, what it will hold.

Cheap and local (no client, no torch): the dataset digest (the config without ``n_samples``),
task keys, the check of an existing store before a cluster starts, size estimates and the
dry-run plan; how a run runs (:class:`GenerateOptions`), what it reports on the way
(:class:`RunEvent`) and what it did (:class:`RunReport`). One check asks the workers, once a
client exists: :func:`check_shared_filesystem` (every worker must see the store).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faket_dask.angles import parse_angles
from faket_dask.config import SimulationConfig
from faket_dask.errors import ClusterError, InputError
from faket_dask.io import store as st

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "EVENT_KINDS",
    "GenerateOptions",
    "RunEvent",
    "RunReport",
    "changed_keys",
    "check_shared_filesystem",
    "check_store",
    "checked_run",
    "dataset_digest",
    "estimate_sample_bytes",
    "fmt_bytes",
    "fmt_duration",
    "make_plan",
    "plan_run",
    "task_key",
]


@dataclass
class RunReport:
    """What a :func:`faket_dask.dist.runner.generate` call did."""

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
    def config_error(self) -> str | None:
        """The error when every computed sample failed on bad input (``None`` otherwise).

        Such a failure (an :class:`~faket_dask.errors.InputError` inside the sample, e.g. a
        particle that cannot be placed) is deterministic: ``--resume`` would fail the same way.
        """
        if self.n_done or not self.n_failed or self.interrupted:
            return None
        if not all(f.get("input_error") for f in self.failures):
            return None
        return str(self.failures[0].get("error", "")).removeprefix("InputError: ")

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


def fmt_bytes(n: float) -> str:
    """Bytes for people: ``512 B``, ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def fmt_duration(s: float) -> str:
    """Seconds for people: ``12.0 s``, ``3.5 min``, ``1.25 h``."""
    s = max(0.0, s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def check_store(
    store: str | os.PathLike[str], config: SimulationConfig, resume: bool
) -> tuple[bool, dict[str, Any] | None]:
    """``(exists, root attrs)``; refuses an existing store without resume or a changed config.

    Cheap (reads the root's zarr.json only): the CLI calls it before it starts a cluster.
    """
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
    st.check_writable(store)
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


def make_plan(
    config: SimulationConfig,
    store: Path,
    n: int,
    done: set[int],
    cluster: str | None,
) -> dict[str, Any]:
    """The dry-run plan of ``n`` samples (``done`` complete): counts, bytes, and display rows."""
    per = estimate_sample_bytes(config)
    per_total = sum(per.values())
    todo = n - len(done)
    rows = [
        ("store", str(store)),
        ("samples", f"{n} ({todo} to compute, {len(done)} already complete)"),
        (
            "per sample",
            f"{fmt_bytes(per_total)} uncompressed ("
            + ", ".join(f"{k} {fmt_bytes(v)}" for k, v in per.items() if v)
            + ")",
        ),
        ("in total", f"{fmt_bytes(per_total * n)} ({fmt_bytes(per_total * todo)} to write)"),
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


EVENT_KINDS = (
    "alert",
    "skipped",
    "started",
    "done",
    "failed",
    "warning",
    "rescheduled",
    "finished",
    "interrupted",
)


@dataclass(frozen=True)
class RunEvent:
    """One thing that happened in a run, for whoever displays it.

    Attributes
    ----------
    kind
        ``alert`` (a loud note before the run, e.g. a fallback to random weights), ``skipped``
        (samples already complete), ``started`` (the first tasks are submitted), ``done`` or
        ``failed`` (one sample; ``message`` is the error), ``warning``, ``rescheduled`` (a new
        scheduler gets the samples in flight again), ``finished`` (also when a
        :class:`~faket_dask.errors.ClusterError` stops the run) or ``interrupted`` (Ctrl-C).
    report
        The run's counts so far (the final report for ``finished`` and ``interrupted``).
    sample_id
        The sample of a ``done`` or ``failed`` event.
    message
        Plain text (no markup).
    elapsed_s
        Seconds since the first submission (``done``, ``failed``).
    """

    kind: str
    report: RunReport
    sample_id: int | None = None
    message: str = ""
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class GenerateOptions:
    """How :func:`~faket_dask.dist.runner.generate` runs: all but the config, store and client.

    Attributes
    ----------
    n_samples
        Samples in the store (default ``config.n_samples``).
    resume
        Continue an existing store: skip complete samples, redo the rest; ``n_samples`` may
        grow; any other config change is refused, naming the changed keys.
    retries
        Retries of a sample that raised (worker deaths count against
        ``distributed.scheduler.allowed-failures`` instead).
    window
        Tasks in flight (default: 3 per worker thread, refreshed as workers join).
    dry_run
        Plan only (samples, bytes per sample and in total, the cluster): ``report.plan``.
    cluster_description
        How the plan names the cluster (a dry run contacts none).
    task
        The per-sample function (default :func:`faket_dask.pipeline.simulate_sample`).
    preload_model
        Register a :class:`~faket_dask.dist.plugins.WorkerSetup` plugin that loads VGG-19 once on
        every worker (present and future) before its first sample.
    base_dir
        Folder that relative paths in the config (templates, imports) are resolved against
        (the config file's folder).
    scheduler_timeout
        Seconds the client may stay disconnected from the scheduler (it reconnects by itself
        meanwhile) before the run stops with a :class:`~faket_dask.errors.ClusterError`.
    on_event
        Called with every :class:`RunEvent` (default: nothing is displayed).
    """

    n_samples: int | None = None
    resume: bool = False
    retries: int = 0
    window: int | None = None
    dry_run: bool = False
    cluster_description: str | None = None
    task: Callable[..., dict[str, Any]] | None = None
    preload_model: bool = True
    base_dir: str | None = None
    scheduler_timeout: float = 60.0
    on_event: Callable[[RunEvent], None] | None = None

    def emit(self, kind: str, report: RunReport, **fields: Any) -> None:
        """Send one event to ``on_event`` (if any)."""
        if self.on_event is not None:
            self.on_event(RunEvent(kind, report, **fields))


def checked_run(
    config: SimulationConfig, store: str | os.PathLike[str], opts: GenerateOptions
) -> tuple[int, Path, bool, dict[str, Any] | None]:
    """``(n_samples, store path, exists, root attrs)`` once the run's inputs are checked."""
    n = int(opts.n_samples if opts.n_samples is not None else config.n_samples)
    if n < 1:
        raise InputError("--n-samples must be at least 1")
    store_path = Path(store).expanduser().resolve()
    exists, attrs = check_store(store_path, config, opts.resume)
    return n, store_path, exists, attrs


def plan_run(
    config: SimulationConfig, store: str | os.PathLike[str], opts: GenerateOptions
) -> RunReport:
    """The dry run: what :func:`faket_dask.dist.runner.generate` would do (``report.plan``)."""
    n, store_path, exists, _ = checked_run(config, store, opts)
    done = st.completed_ids(store_path, range(n)) if exists else set()
    plan = make_plan(config, store_path, n, done, opts.cluster_description)
    return RunReport(
        store=str(store_path), n_samples=n, n_skipped=len(done), dry_run=True, plan=plan
    )


# --------------------------------------------------------------------------------------------
# With a client
# --------------------------------------------------------------------------------------------


def check_shared_filesystem(client: Client, path: str | os.PathLike[str]) -> None:
    """Check that every worker sees the store: write a token here, read it on each worker.

    Raises
    ------
    ClusterError
        Some worker cannot read the token (the store is on a disk only this machine sees).
    """
    p = Path(path).resolve()
    token = uuid.uuid4().hex
    token_file = p / f".faket-fs-check-{token}"
    token_file.write_text(token)
    try:
        result = client.run(_read_token, str(token_file), token)
    finally:
        with contextlib.suppress(OSError):
            token_file.unlink()
    bad = sorted(w for w, ok in result.items() if not ok)
    if bad:
        raise ClusterError(
            f"store {p} is not visible from {len(bad)} worker(s) (e.g. {bad[0]}): put the store "
            "on a filesystem every worker mounts at the same path"
        )


def _read_token(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False
