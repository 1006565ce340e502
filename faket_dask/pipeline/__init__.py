"""One sample, end to end, with no Dask: ``simulate_sample(spec) -> summary``.

``inputs`` (what every sample shares, resolved once), ``draw`` (what one sample draws),
``worker_cache`` (per-process model and Gram caches, the device), ``simulate`` (the stages in
order, writing the sample), ``overlap`` (read-ahead, the writer thread, the device lock).
"""

from faket_dask.pipeline.draw import SampleDraw, SampleSpec, draw
from faket_dask.pipeline.inputs import SharedInputs, materialize_inputs, resolve_inputs
from faket_dask.pipeline.simulate import simulate_sample
from faket_dask.pipeline.worker_cache import (
    deterministic_mode,
    get_style_model,
    gram_cache,
    model_loads,
    resolve_device,
    torch_device,
)

__all__ = [
    "SampleDraw",
    "SampleSpec",
    "SharedInputs",
    "deterministic_mode",
    "draw",
    "get_style_model",
    "gram_cache",
    "materialize_inputs",
    "model_loads",
    "resolve_device",
    "resolve_inputs",
    "simulate_sample",
    "torch_device",
]
