"""Connect to a Dask cluster: an address, a scheduler file, a profile YAML, or an embedded one.

Resolution order (the first that applies wins):

1. ``scheduler=ADDRESS`` (``--scheduler``),
2. ``scheduler_file=FILE`` (``--scheduler-file``),
3. ``cluster_profile=PROFILE.yaml`` (``--cluster-profile``)::

       cluster: dask_jobqueue.SLURMCluster     # import path of a cluster class
       kwargs: {cores: 8, memory: 64GB}       # its keyword arguments
       scale: 4                               # or adapt: {minimum: 0, maximum: 16}
       dask_config: {distributed.worker.lifetime.duration: 55m}

4. ``$DASK_SCHEDULER_ADDRESS`` (explicit options above override it),
5. an embedded local cluster: ``dask_cuda.LocalCUDACluster`` (one worker per GPU, one thread
   each) when dask-cuda is importable and GPUs are present, else a ``LocalCluster`` of
   single-threaded worker processes. ``threads_per_worker`` (``--threads-per-worker``) gives
   each worker more threads: a GPU worker then builds one sample on the CPU while another
   uses the GPU (the pipeline's device stages take turns, see :mod:`faket_dask.pipeline.overlap`).

GPUs are detected without creating a CUDA context in this process (``CUDA_VISIBLE_DEVICES``,
``nvidia-smi -L``, ``/proc/driver/nvidia/gpus``): CUDA must first be touched inside the
workers, never in the client. An unreachable scheduler, or no worker within
``worker_timeout`` seconds, is a :class:`~faket_dask.errors.ClusterError` (exit code 3).

Worker plugins (:mod:`faket_dask.dist.plugins`): :class:`WorkerSetup` sets torch's CPU threads
in each worker (distributed starts workers with ``OMP_NUM_THREADS=1``) and optionally preloads
VGG-19 once per worker, so the first task does not pay for it. Both are idempotent:
re-registering does not reload the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faket_dask.dist.plugins import QuietWorker, WorkerSetup
from faket_dask.errors import ClusterError, InputError

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "ClusterSource",
    "connect",
    "describe_client",
    "detect_gpus",
    "load_profile",
    "resolve_source",
]

ENV_ADDRESS = "DASK_SCHEDULER_ADDRESS"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# GPU detection without CUDA
# --------------------------------------------------------------------------------------------


def detect_gpus() -> int:
    """Count usable NVIDIA GPUs without creating a CUDA context in this process.

    ``CUDA_VISIBLE_DEVICES`` (when set) limits the count ("" or "-1" hides every GPU); the
    driver is asked through ``nvidia-smi -L`` and, failing that, ``/proc/driver/nvidia/gpus``.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    listed: list[str] | None = None
    if visible is not None:
        listed = []
        for item in visible.split(","):
            item = item.strip()
            if not item or item.startswith("-"):
                break  # CUDA stops at the first invalid entry
            listed.append(item)
        if not listed:
            return 0
    n = 0
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            out = subprocess.run(
                [exe, "-L"], capture_output=True, text=True, timeout=10, check=False
            )
            if out.returncode == 0:
                n = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            n = 0
    if n == 0:
        proc = Path("/proc/driver/nvidia/gpus")
        with contextlib.suppress(OSError):
            if proc.is_dir():
                n = sum(1 for _ in proc.iterdir())
    if listed is not None:
        return min(n, len(listed))
    return n


def _dask_cuda_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("dask_cuda") is not None


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterSource:
    """Where the cluster comes from: the result of the resolution order, before connecting.

    ``kind`` is one of ``address``, ``scheduler-file``, ``profile``, ``env``, ``local-cuda``,
    ``local``; ``detail`` is the address, file, profile path or a description of the embedded
    cluster.
    """

    kind: str
    detail: str
    n_workers: int | None = None
    n_gpus: int = 0
    threads_per_worker: int = 1
    profile: dict[str, Any] = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        """One human line."""
        if self.kind in ("address", "env"):
            via = "" if self.kind == "address" else f" (from ${ENV_ADDRESS})"
            return f"Dask scheduler at {self.detail}{via}"
        if self.kind == "scheduler-file":
            return f"Dask scheduler from scheduler file {self.detail}"
        if self.kind == "profile":
            return f"cluster profile {self.detail} ({self.profile.get('cluster')})"
        return f"embedded {self.detail}"


def _local_worker_count(n_workers: int | None, threads: int = 1) -> int:
    if n_workers is not None:
        return max(1, int(n_workers))
    cores = max(1, (os.cpu_count() or 1) // max(1, threads))
    try:
        import psutil

        mem_gib = psutil.virtual_memory().total / 2**30
    except Exception:  # pragma: no cover - psutil is a distributed dependency
        mem_gib = 2.0 * cores
    # Each worker holds torch, VGG-19 and a sample's stacks per thread: ~2 GiB per thread.
    return max(1, min(cores, int(mem_gib // (2 * max(1, threads)))))


def load_profile(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a cluster profile YAML (see the module docstring)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"cluster profile {p} does not exist; pass a YAML file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError:
        raise InputError(f"cluster profile {p} is not valid YAML") from None
    if not isinstance(data, dict):
        raise InputError(f"cluster profile {p} must be a mapping with a 'cluster' key")
    known = {"cluster", "kwargs", "scale", "adapt", "dask_config"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(
            f"cluster profile {p}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )
    cls = data.get("cluster")
    if not isinstance(cls, str) or "." not in cls:
        raise InputError(
            f"cluster profile {p}: 'cluster' must be an import path such as "
            "dask_jobqueue.SLURMCluster"
        )
    for key in ("kwargs", "dask_config"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise InputError(f"cluster profile {p}: {key!r} must be a mapping")
    if "scale" in data and "adapt" in data:
        raise InputError(f"cluster profile {p}: give 'scale' or 'adapt', not both")
    if "scale" in data and (not isinstance(data["scale"], int) or data["scale"] < 0):
        raise InputError(f"cluster profile {p}: 'scale' must be a number of workers >= 0")
    if "adapt" in data and not isinstance(data["adapt"], dict):
        raise InputError(f"cluster profile {p}: 'adapt' must be {{minimum: N, maximum: M}}")
    return data


def resolve_source(
    scheduler: str | None = None,
    scheduler_file: str | os.PathLike[str] | None = None,
    cluster_profile: str | os.PathLike[str] | None = None,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
) -> ClusterSource:
    """Apply the resolution order without connecting to anything."""
    given = [x for x in (scheduler, scheduler_file, cluster_profile) if x]
    if len(given) > 1:
        raise InputError("give one of --scheduler, --scheduler-file and --cluster-profile")
    if threads_per_worker is not None and threads_per_worker < 1:
        raise InputError("--threads-per-worker must be at least 1")
    threads = int(threads_per_worker or 1)
    if threads_per_worker is not None and (given or os.environ.get(ENV_ADDRESS, "").strip()):
        raise InputError(
            "--threads-per-worker applies to the embedded local cluster only; start external "
            "workers with `dask worker --nthreads N` (or `dask cuda worker --nthreads N`)"
        )
    if scheduler:
        return ClusterSource("address", str(scheduler))
    if scheduler_file:
        path = Path(scheduler_file)
        if not path.is_file():
            raise InputError(
                f"scheduler file {path} does not exist; start the scheduler with "
                f"`dask scheduler --scheduler-file {path}` first"
            )
        return ClusterSource("scheduler-file", str(path))
    if cluster_profile:
        prof = load_profile(cluster_profile)
        return ClusterSource("profile", str(cluster_profile), profile=prof)
    env = os.environ.get(ENV_ADDRESS, "").strip()
    if env:
        return ClusterSource("env", env)
    gpus = detect_gpus()
    if gpus and _dask_cuda_available():
        n = min(gpus, n_workers) if n_workers else gpus
        return ClusterSource(
            "local-cuda",
            f"LocalCUDACluster: {n} worker(s), one per GPU, {_threads(threads)} each",
            n_workers=n,
            n_gpus=gpus,
            threads_per_worker=threads,
        )
    n = _local_worker_count(n_workers, threads)
    note = f" ({gpus} GPU(s) seen but dask-cuda is not installed)" if gpus else ""
    kind = "single-threaded" if threads == 1 else f"{threads}-thread"
    return ClusterSource(
        "local",
        f"LocalCluster: {n} {kind} worker process(es){note}",
        n_workers=n,
        n_gpus=gpus,
        threads_per_worker=threads,
    )


def _threads(n: int) -> str:
    return "1 thread" if n == 1 else f"{n} threads"


# --------------------------------------------------------------------------------------------
# Connecting
# --------------------------------------------------------------------------------------------


def describe_client(client: Client) -> dict[str, Any]:
    """Workers, threads, memory and the dashboard link of a connected client."""
    info = (
        client.scheduler_info(n_workers=-1)
        if _accepts_n_workers(client)
        else (client.scheduler_info())
    )
    workers = info.get("workers", {})
    threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
    memory = sum(int(w.get("memory_limit", 0) or 0) for w in workers.values())
    return {
        "address": info.get("address", getattr(client.scheduler, "address", "?")),
        "n_workers": len(workers),
        "threads": threads,
        "memory_bytes": memory,
        "dashboard": _dashboard_link(client),
    }


def _accepts_n_workers(client: Client) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _dashboard_link(client: Client) -> str | None:
    try:
        info = client.scheduler_info()
        if "dashboard" not in info.get("services", {}):
            return None
        return str(client.dashboard_link)
    except Exception:
        return None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _open_client(source: ClusterSource, timeout: float, stack: contextlib.ExitStack) -> Client:
    from distributed import Client

    if source.kind in ("address", "env"):
        try:
            return stack.enter_context(Client(source.detail, timeout=timeout, set_as_default=False))
        except (OSError, TimeoutError, ValueError) as err:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {source.detail} within {timeout:g} s "
                f"({_first_line(err)}); check the address and that the scheduler is running"
            ) from None
    if source.kind == "scheduler-file":
        try:
            return stack.enter_context(
                Client(scheduler_file=source.detail, timeout=timeout, set_as_default=False)
            )
        except (OSError, TimeoutError, ValueError) as err:
            raise ClusterError(
                f"cannot reach the scheduler named in {source.detail} within {timeout:g} s "
                f"({_first_line(err)}); is the scheduler still running?"
            ) from None
    if source.kind == "profile":
        return _open_profile(source, timeout, stack)
    if source.kind == "local-cuda":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as err:  # e.g. dask-cuda 26.x without cuda-bindings
            raise ClusterError(
                f"dask-cuda is installed but does not import ({_first_line(err)}); install "
                "cuda-bindings for your CUDA major version (pip install 'cuda-bindings==12.*') "
                "or pass --scheduler/--cluster-profile"
            ) from None

        stack.enter_context(_caller_environ_kept())
        cluster = stack.enter_context(
            LocalCUDACluster(
                n_workers=source.n_workers, threads_per_worker=source.threads_per_worker
            )
        )
        stack.callback(_close_workers, cluster)
        return stack.enter_context(Client(cluster, set_as_default=False))
    return _open_local(source, stack)


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _open_local(source: ClusterSource, stack: contextlib.ExitStack) -> Client:
    import dask
    from distributed import Client, LocalCluster

    n = int(source.n_workers or 1)
    cores = os.cpu_count() or 1
    per_worker = str(max(1, cores // n))
    # distributed pins OMP/MKL/OpenBLAS to 1 thread per worker; give each worker its share.
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    threads = dict.fromkeys(_THREAD_VARIABLES, per_worker)
    environ.update(threads)
    stack.enter_context(_caller_environ_kept())
    # a value already in the caller's environment beats the config in distributed's nanny, so
    # the share goes there too: the workers' thread count (hence the styled bytes) must not
    # depend on whether the shell, or an earlier cluster in this process, set OMP_NUM_THREADS
    os.environ.update(threads)
    stack.enter_context(dask.config.set({"distributed.nanny.pre-spawn-environ": environ}))
    cluster = stack.enter_context(
        LocalCluster(
            n_workers=n,
            threads_per_worker=source.threads_per_worker,
            processes=True,
            dashboard_address=":0",
        )
    )
    stack.callback(_close_workers, cluster)  # after the client closes, before the cluster
    client = stack.enter_context(Client(cluster, set_as_default=False))
    client.register_plugin(QuietWorker())  # its output shares the terminal with the client's
    return client


@contextlib.contextmanager
def _caller_environ_kept() -> Iterator[None]:
    """Give the caller's ``os.environ`` back when the embedded cluster is closed.

    distributed's nanny writes its pre-spawn variables (``OMP_NUM_THREADS=1``, ...) into the
    environment of the process that starts it, and leaves them there: a Python caller, and every
    subprocess it starts later, would inherit them.
    """
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


#: Seconds a nanny of an embedded cluster gives its worker process to exit on close.
WORKER_CLOSE_TIMEOUT_S = 30.0


def _close_workers(cluster: Any, timeout: float = WORKER_CLOSE_TIMEOUT_S) -> None:
    """Close an embedded cluster's nannies, letting each worker process exit on its own.

    ``LocalCluster.close`` gives each nanny 5 s and kills the worker after 4 s ("Worker process
    still alive after 4.0 seconds, killing"); a worker that imported torch takes longer than
    that to exit on a loaded machine. Nothing is lost either way (the samples are written).
    """

    async def close_all() -> None:
        await asyncio.gather(*(w.close(timeout=timeout) for w in list(cluster.workers.values())))

    with contextlib.suppress(Exception):
        cluster.sync(close_all)


def _open_profile(source: ClusterSource, timeout: float, stack: contextlib.ExitStack) -> Client:
    import dask
    from distributed import Client

    prof = source.profile
    if prof.get("dask_config"):
        stack.enter_context(dask.config.set(prof["dask_config"]))
    path = str(prof["cluster"])
    module_name, _, cls_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as err:
        raise InputError(
            f"cluster profile {source.detail}: cannot import {path} ({_first_line(err)}); "
            "install the package that provides it (e.g. dask-jobqueue)"
        ) from None
    try:
        cluster = stack.enter_context(cls(**(prof.get("kwargs") or {})))
    except TypeError as err:
        raise InputError(
            f"cluster profile {source.detail}: bad kwargs for {path}: {_first_line(err)}"
        ) from None
    except Exception as err:
        raise ClusterError(
            f"cluster profile {source.detail}: {path} failed to start: {_first_line(err)}"
        ) from None
    if "adapt" in prof:
        ad = prof["adapt"]
        cluster.adapt(minimum=ad.get("minimum", 0), maximum=ad.get("maximum", ad.get("minimum")))
    elif "scale" in prof:
        cluster.scale(int(prof["scale"]))
    return stack.enter_context(Client(cluster, timeout=timeout, set_as_default=False))


def _wait_for_workers(client: Client, source: ClusterSource, timeout: float) -> None:
    prof = source.profile
    if source.kind == "profile" and "adapt" in prof and not prof["adapt"].get("minimum"):
        return  # an adaptive cluster with minimum 0 starts workers once work arrives
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, OSError) as err:
        raise ClusterError(
            f"no Dask worker joined {source.describe()} within {timeout:g} s "
            f"({_first_line(err) or 'timeout'}); start workers "
            f"(`dask worker ADDRESS`) or raise --worker-timeout"
        ) from None


@contextlib.contextmanager
def connect(
    scheduler: str | None = None,
    scheduler_file: str | os.PathLike[str] | None = None,
    cluster_profile: str | os.PathLike[str] | None = None,
    worker_timeout: float = 60,
    n_workers: int | None = None,
    *,
    threads_per_worker: int | None = None,
    echo: Callable[[str], None] | None = _stderr,
    preload: WorkerSetup | None = None,
) -> Iterator[Client]:
    """Yield a connected :class:`distributed.Client` (and close what was started on exit).

    Parameters
    ----------
    scheduler, scheduler_file, cluster_profile
        At most one; see the module docstring for the resolution order.
    worker_timeout
        Seconds to wait for the scheduler and for the first worker.
    n_workers
        Worker count of an embedded local cluster (default: one per core or per GPU).
    threads_per_worker
        Threads (samples at a time) per worker of an embedded local cluster (default 1).
    echo
        Where to print the cluster line and the dashboard link (``None``: silent).
    preload
        A :class:`WorkerSetup` plugin to register. (An embedded CPU cluster already gives each
        worker ``cores // workers`` OpenMP/torch threads through its environment.)

    Raises
    ------
    ClusterError
        The scheduler cannot be reached or no worker joins within ``worker_timeout``.
    InputError
        Conflicting options, a missing scheduler file or a bad profile.
    """
    source = resolve_source(
        scheduler, scheduler_file, cluster_profile, n_workers, threads_per_worker
    )
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        client = _open_client(source, float(worker_timeout), stack)
        remaining = max(1.0, float(worker_timeout) - (time.monotonic() - t0))
        _wait_for_workers(client, source, remaining)
        if preload is not None:
            client.register_plugin(preload)
        if echo is not None:
            desc = describe_client(client)
            echo(
                f"cluster: {source.describe()}; {desc['n_workers']} worker(s), "
                f"{desc['threads']} thread(s)"
            )
            if desc["dashboard"]:
                echo(f"dashboard: {desc['dashboard']}")
                if source.kind not in ("local", "local-cuda"):
                    echo(
                        "  (on a remote cluster: ssh -L 8787:SCHEDULER_HOST:8787 LOGIN_NODE, "
                        "then open http://localhost:8787/status)"
                    )
        yield client
