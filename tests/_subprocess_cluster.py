"""Dask schedulers and workers as real subprocesses, for the tests that kill or restart them."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_quiet(cmd: list[str], **kw) -> subprocess.Popen:
    """Start ``cmd`` with its output discarded."""
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def start_scheduler(*, port: int = 0, scheduler_file: Path | None = None) -> subprocess.Popen:
    """``dask scheduler`` on 127.0.0.1 (``port`` 0: any), optionally writing a scheduler file."""
    cmd = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--dashboard-address", ":0"]
    if scheduler_file is not None:
        cmd += ["--scheduler-file", str(scheduler_file)]
    return start_quiet(cmd)


def start_worker(address: str) -> subprocess.Popen:
    """One single-threaded ``dask worker`` (with its nanny) for the scheduler at ``address``."""
    cmd = [sys.executable, "-m", "distributed.cli.dask_worker", address]
    cmd += ["--nthreads", "1", "--nworkers", "1", "--no-dashboard"]
    return start_quiet(cmd)


def stop_all(procs: Iterable[subprocess.Popen], timeout: float = 20) -> None:
    """Terminate what is still running, newest first; kill what does not stop in time."""
    procs = list(reversed(list(procs)))
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
