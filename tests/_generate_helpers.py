"""Tiny configs shared by the generate/runner/pipeline tests."""

from __future__ import annotations

import copy
from typing import Any

from faket_dask.config import SimulationConfig, config_from_dict

TINY: dict[str, Any] = {
    "seed": 7,
    "n_samples": 4,
    "tilts": {"angles": "-40:40:40", "shape": [16, 16], "pixel_spacing": 20.0},
    "sample": {
        "thickness": 8,
        "particles": [
            {"name": "ball", "template": "builtin:sphere", "count": 2},
            {"name": "rod", "template": "builtin:rod:0.25", "count": 1},
        ],
    },
    "style": {"weights": "random", "batch_size": 4},
    "output": {"modalities": ["styled", "noisy", "noiseless"], "tilts_per_shard": 2, "chunk": 16},
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def tiny_dict(**over: Any) -> dict[str, Any]:
    """The tiny config as a dict, sections merged with ``over``."""
    return _merge(TINY, over)


def tiny_config(**over: Any) -> SimulationConfig:
    """A config whose samples take well under a second on one CPU thread."""
    return config_from_dict(tiny_dict(**over))
