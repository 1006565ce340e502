"""A tiny dataset store made in-process (no Dask), cached once per test session and path."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from _generate_helpers import tiny_config

_CACHE: dict[tuple[Any, ...], Path] = {}


def make_store(root: Path, n: int = 3, **over: Any) -> Path:
    """Write ``n`` complete tiny samples (tilts 3 x 16 x 16, tomogram, demo reference) to a store.

    Root attrs, inputs and the manifest are written the way ``generate`` writes them. The result
    is cached per session: pass a session-scoped ``root``; callers must not modify the store
    (copy it first).
    """
    import torch

    from faket_dask import pipeline as pl
    from faket_dask.io import store as st

    key = (str(root), n, repr(sorted(over.items())))
    if key in _CACHE and _CACHE[key].exists():
        return _CACHE[key]
    over.setdefault("reconstruction", {"enabled": True, "bin": 2})
    over.setdefault("output", {"modalities": ["styled", "noisy", "baseline", "noiseless"]})
    cfg = tiny_config(n_samples=n, **over)
    path = Path(root) / f"tiny_{len(_CACHE)}.zarr"
    if path.exists():
        shutil.rmtree(path)
    inputs = pl.resolve_inputs(cfg, path)
    st.create_store(
        path,
        {"config": cfg.to_dict(), "n_samples": n, **inputs.to_attrs()},
    )
    inputs = pl.materialize_inputs(inputs, cfg, path)
    st.update_store_attrs(path, **inputs.to_attrs())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = [
            pl.simulate_sample(pl.SampleSpec(cfg.seed, i, cfg, str(path), inputs)) for i in range(n)
        ]
    finally:
        torch.set_num_threads(threads)
    st.write_manifest(path, rows)
    st.consolidate(path)
    _CACHE[key] = path
    return path
