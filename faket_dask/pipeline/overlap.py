"""Overlap a sample's CPU work with its device work: read-ahead, background writes, device lock.

A sample alternates between CPU work (drawing and rendering the volume, compressing and
writing chunks) and device work (projection, noise, style transfer, reconstruction). Three
small tools let those run at the same time without changing a single output byte:

* :func:`read_ahead` runs an iterator one or more items ahead on a thread, so the next Y slab
  of the volume is rendered while the current one is projected;
* :class:`Background` runs writes on one thread, in submission order, with a bound on how
  many are queued (memory stays bounded), and re-raises the first error in the caller;
* :func:`device_lock` is one lock per device in a process: when a worker runs several samples
  in threads (``--threads-per-worker``), their device stages take turns, while one sample's
  CPU stages run beside another's device stages.

Nothing here knows of Dask or Zarr; every result is computed by the same calls, in the same
order per sample, as without overlap.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["Background", "device_lock", "read_ahead"]

T = TypeVar("T")

_DONE = object()


def read_ahead(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Yield ``items`` in order while a thread computes up to ``depth`` of them ahead.

    Parameters
    ----------
    items
        Any iterable; it is consumed on one background thread only.
    depth
        Items computed ahead of the consumer (0: no thread, plain iteration).

    Notes
    -----
    An exception raised by the iterable is re-raised at the item where it happened. When the
    consumer stops early (``break``, an error), the producer is stopped after at most
    ``depth`` more items and the thread is joined.
    """
    if depth <= 0:
        yield from items
        return
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put((_DONE, None))
        except BaseException as err:  # re-raised in the consumer
            slots.put((_DONE, err))

    thread = threading.Thread(target=produce, name="faket-dask-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, err = slots.get()
            if item is _DONE:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                slots.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


class Background:
    """Run calls on one background thread, in order, at most ``max_pending`` queued.

    Use as a context manager: leaving the block waits for every call; the first call that
    raised re-raises its error there (and in :meth:`submit` / :meth:`wait` as soon as it is
    seen). After an error, calls not yet started are cancelled.

    Parameters
    ----------
    max_pending
        Calls queued or running before :meth:`submit` blocks (bounds the memory that queued
        arguments hold, e.g. rendered slabs waiting to be written).
    """

    def __init__(self, max_pending: int = 2) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="faket-dask-writer")
        self._pending: list[Future[Any]] = []
        self._max = int(max_pending)
        self.busy_s = 0.0  # seconds the thread spent in calls

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        """Queue ``fn(*args, **kwargs)``; block while ``max_pending`` calls are unfinished."""
        self._reap(block=False)
        while len(self._pending) >= self._max:
            self._pending[0].result()  # raises the call's error
            self._reap(block=False)
        fut = self._pool.submit(self._timed, fn, *args, **kwargs)
        self._pending.append(fut)
        return fut

    def _timed(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.busy_s += time.perf_counter() - t0

    def _reap(self, block: bool) -> None:
        keep = []
        for fut in self._pending:
            if fut.done() or block:
                fut.result()  # re-raise
            else:
                keep.append(fut)
        self._pending = keep if not block else []

    def wait(self) -> None:
        """Wait for every queued call; re-raise the first error."""
        self._reap(block=True)

    def close(self, cancel: bool = False) -> None:
        """Stop the thread (after the queued calls, or cancelling those not started)."""
        if cancel:
            for fut in self._pending:
                fut.cancel()
        self._pool.shutdown(wait=True, cancel_futures=cancel)
        self._pending = []

    def __enter__(self) -> Background:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.close(cancel=True)  # the caller's error wins; queued writes are dropped
            return
        try:
            self.wait()
        except BaseException:
            self.close(cancel=True)
            raise
        self.close()


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def device_lock(device: str) -> threading.Lock:
    """The process-wide lock of ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).

    ``"cuda"`` and ``"cuda:0"`` name different locks only if the caller mixes both spellings;
    the pipeline always passes the resolved device string.
    """
    key = str(device)
    with _LOCKS_GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = threading.Lock()
        return lock
