"""Worker plugins: what each worker does once when it joins (torch threads, VGG-19 preload)."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["QuietWorker", "WorkerSetup"]




class WorkerSetup(WorkerPlugin):
    """Prepare each worker once: torch CPU threads and (optionally) the VGG-19 model.

    Parameters
    ----------
    torch_threads
        ``torch.set_num_threads`` value for CPU work in the worker (``None``: leave as is).
    weights
        A weights spec to preload with :func:`faket_dask.pipeline.get_style_model`
        (``None``: no preload; the model is then loaded by the first task, still once).
    weights_seed, device
        Passed to the loader (``device='auto'``: CUDA when the worker has it).
    """

    idempotent = True

    def __init__(
        self,
        torch_threads: int | None = None,
        weights: str | None = None,
        weights_seed: int = 0,
        device: str = "auto",
    ) -> None:
        self.torch_threads = torch_threads
        self.weights = weights
        self.weights_seed = weights_seed
        self.device = device
        self.name = f"faket-dask-setup-{weights or 'none'}-{weights_seed}-{device}"

    def setup(self, worker: Any = None) -> None:
        """Run on each worker when it registers (and on workers that join later)."""
        # torch and the pipeline load here, on the worker: the client only ships the plugin
        import torch

        from faket_dask.pipeline import get_style_model

        if self.torch_threads:
            torch.set_num_threads(int(self.torch_threads))
        if self.weights:
            try:
                get_style_model(self.weights, self.weights_seed, self.device)
            except Exception as err:  # the task will raise it again, with context
                msg = f"faket-dask: VGG-19 preload failed on this worker: {err}"
                print(msg, file=sys.stderr, flush=True)


class _NoComputeFailed(logging.Filter):
    """Drop distributed's "Compute Failed ... Traceback" record of a task that raised."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Compute Failed")


class QuietWorker(WorkerPlugin):
    """A worker of the embedded cluster, whose output shares the terminal with the progress bar.

    A sample that raises is reported once, by the client (a ``failed`` line, the summary and
    the manifest carry the error), so the worker's "Compute Failed" traceback is dropped; and
    Ctrl-C, which the terminal sends to every process of the group, is the client's to handle
    (it cancels the tasks), so the worker ignores SIGINT instead of printing a traceback.
    """

    idempotent = True
    name = "faket-dask-quiet-worker"

    def setup(self, worker: Any = None) -> None:
        """Install the log filter; ignore SIGINT (when this runs on the main thread)."""
        log = logging.getLogger("distributed.worker")
        if not any(isinstance(f, _NoComputeFailed) for f in log.filters):
            log.addFilter(_NoComputeFailed())
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGINT, signal.SIG_IGN)

