"""Per-process caches of a worker, the device choice and deterministic mode.

The VGG-19 model, style Gram matrices, references and noise models load once per process.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from faket_dask.errors import InputError
from faket_dask.io import read_tilt_series
from faket_dask.io import store as st
from faket_dask.stages.calibration import Calibration
from faket_dask.stages.noise import NoiseModel
from faket_dask.stages.style import GramCache
from faket_dask.stages.style.weights import load_vgg19

DEVICES = ("auto", "cpu", "cuda")


_LOCK = threading.Lock()


_LOADS: dict[str, int] = {}


_GRAM_CACHE: Any = None


def get_style_model(weights: str, seed: int = 0, device: str = "auto") -> Any:
    """The VGG-19 feature model for ``weights`` on ``device``, loaded once per process.

    Counts loads per (weights, seed, device) in :func:`model_loads`.
    """
    dev = resolve_device(device)
    key = f"{weights}|{seed}|{dev}"
    with _LOCK:
        first = key not in _LOADS
        model, _info = load_vgg19(weights, seed=seed, device=dev)
        if first:
            _LOADS[key] = _LOADS.get(key, 0) + 1
    return model


def model_loads() -> dict[str, int]:
    """How many times this process loaded each model (1 each when caching works)."""
    with _LOCK:
        return dict(_LOADS)


def gram_cache() -> Any:
    """Return the process-wide style Gram-matrix cache (keyed by the style reference)."""
    global _GRAM_CACHE
    with _LOCK:
        if _GRAM_CACHE is None:
            _GRAM_CACHE = GramCache()
        return _GRAM_CACHE


@functools.lru_cache(maxsize=4)
def _load_reference(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    # read in this thread (io opens Zarr without Dask): inside a Dask worker, a lazy read would
    # go to the cluster and let this worker start other samples meanwhile
    series = read_tilt_series(path)
    data = np.ascontiguousarray(series.data, dtype=np.float32)
    data.setflags(write=False)
    angles = None if series.angles_deg is None else np.asarray(series.angles_deg, "f8")
    return data, angles


@functools.lru_cache(maxsize=16)
def _load_noise_model(path: str) -> NoiseModel:
    """A noise model from a noise.json, or from the attrs of a store's ``inputs`` group."""
    attrs = st.read_group_attrs(path)
    if attrs is not None:
        return NoiseModel.model_validate(attrs["noise_model"])
    return NoiseModel.load(path)


@functools.lru_cache(maxsize=4)
def _load_calibration(path: str) -> Calibration:
    """A calibration from the attrs of a store's ``inputs`` group."""
    attrs = st.read_group_attrs(path)
    if attrs is None:
        raise InputError(f"{path} is not a Zarr group; the store's inputs are damaged")
    return Calibration.model_validate(attrs["calibration"])


def resolve_device(device: str) -> str:
    """``auto`` is CUDA when this process (the worker) has it, else CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def torch_device(device: str) -> torch.device:
    """The device a local verb runs on: the name checked, ``auto`` as :func:`resolve_device`."""
    if device not in DEVICES:
        raise InputError(f"--device {device!r} is not known; use cpu, cuda or auto")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda but no CUDA GPU is available; use --device cpu")
    return torch.device(resolve_device(device))


@contextlib.contextmanager
def deterministic_mode(enabled: bool, device: str) -> Iterator[None]:
    """On CUDA, request deterministic kernels (identical bytes across runs, slower).

    CPU kernels are deterministic per thread count already; on CUDA this sets
    ``torch.use_deterministic_algorithms`` and cuBLAS's fixed workspace for the duration.
    """
    if not (enabled and device.startswith("cuda")):
        yield
        return
    # cuBLAS reads this when its handle is created; set it before the first GEMM
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
