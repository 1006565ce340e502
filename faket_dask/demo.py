"""The built-in demo: the ``generate --demo`` config and its stand-in microscope's constants."""

from __future__ import annotations

from dataclasses import dataclass

from faket_dask.config import SimulationConfig, config_from_dict
from faket_dask.errors import InputError

__all__ = ["DEMO_MAX_SAMPLES", "DEMO_REFERENCE_SEED", "DEMO_SNR", "demo_config"]

DEMO_SNR = 0.25
"""SNR of the built-in demo noise model (fitted on the demo reference, reference-only mode)."""

DEMO_REFERENCE_SEED = 0
"""The built-in demo reference is the same for every dataset (it stands in for a microscope)."""

DEMO_MAX_SAMPLES = 4



@dataclass(frozen=True)
class _DemoSize:
    n: int  # samples
    angles: str  # tilt range "start:stop:step" (degrees)
    shape: tuple[int, int]  # detector (y, x)
    thickness: int  # voxels


#: ``generate --demo small``: 2 samples of 21 tilts at 64², 32 voxels thick (< 1 min, 2 cores).
SMALL = _DemoSize(n=2, angles="-60:60:6", shape=(64, 64), thickness=32)
#: ``generate --demo``: 4 samples of 31 tilts at 128², 48 voxels thick.
FULL = _DemoSize(n=DEMO_MAX_SAMPLES, angles="-60:60:4", shape=(128, 128), thickness=48)


def demo_config(n_samples: int | None = None, small: bool = False) -> SimulationConfig:
    """The ``generate --demo`` job: up to 4 samples of 31 tilts at 128², built-in everything.

    Built-in particle mix and templates, the built-in demo reference and noise model, ImageNet
    weights when cached or downloadable, else random weights (loudly, and recorded). ``small``:
    2 samples of 21 tilts at 64² (``--demo small``).
    """
    size = SMALL if small else FULL
    n = size.n if n_samples is None else int(n_samples)
    if not 1 <= n <= DEMO_MAX_SAMPLES:
        raise InputError(f"--demo makes 1 to {DEMO_MAX_SAMPLES} samples (got --n-samples {n})")
    return config_from_dict(
        {
            "seed": 0,
            "n_samples": n,
            "tilts": {"angles": size.angles, "shape": list(size.shape), "pixel_spacing": 10.0},
            "sample": {"thickness": size.thickness},
            "noise": {"model": "demo"},
            "style": {
                "reference": "demo",
                "weights": "imagenet",
                "weights_fallback": "random",
                "batch_size": 8,
            },
            "reconstruction": {"enabled": True, "bin": 2},
            "output": {
                "modalities": ["styled", "noisy", "noiseless"],
                "tilts_per_shard": 8,
                "chunk": 128,
            },
        },
        source="the built-in demo config",
    )


