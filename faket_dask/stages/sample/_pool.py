"""Host threads for the builder's compiled kernels (they release the GIL).

One pool per thread count, kept for the process: a sample rotates particles in a few dozen
batches, and starting threads for each batch cost more than some batches' work. Jobs run in
the pool must not call :func:`map_threads` themselves (they would wait on their own pool).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["map_threads", "threads"]

_J = TypeVar("_J")
_R = TypeVar("_R")
_POOLS: dict[int, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def threads() -> int:
    """Threads for the builder's kernels: ``FAKET_DASK_SAMPLE_THREADS``, else up to 8 cores."""
    env = os.environ.get("FAKET_DASK_SAMPLE_THREADS")
    if env:
        return max(1, int(env))
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def map_threads(fn: Callable[[_J], _R], jobs: Iterable[_J]) -> list[_R]:
    """``[fn(job) for job in jobs]``, in the process's pool of :func:`threads` threads.

    In the calling thread when there is one thread or one job.
    """
    jobs = list(jobs)
    n = threads()
    if n == 1 or len(jobs) < 2:
        return [fn(job) for job in jobs]
    with _LOCK:
        pool = _POOLS.get(n)
        if pool is None:
            pool = _POOLS[n] = ThreadPoolExecutor(n, thread_name_prefix="faket-sample")
    return list(pool.map(fn, jobs))
