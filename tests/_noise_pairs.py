"""Noise-model test data: clean stacks and references with tilt-dependent statistics.

Shared by tests/stages/test_noise.py (fitting) and tests/stages/test_noise_apply.py (applying).
"""

from __future__ import annotations

import numpy as np

T, H, W = 5, 16, 20
ANGLES = np.array([-40.0, -20.0, 0.0, 20.0, 40.0])
STATS = ("r", "sigma", "mean", "std")


def make_pairs(n_pairs: int = 3, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Clean stacks with structure, and references = tilt-dependent mix of clean and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    pairs = []
    for p in range(n_pairs):
        clean = np.empty((T, H, W))
        ref = np.empty((T, H, W))
        for t in range(T):
            blob = np.exp(-((yy - 5 - t) ** 2 + (xx - 8 - p) ** 2) / 12.0)
            clean[t] = -blob + 0.1 * rng.normal(size=(H, W))
            a = 0.9 - 0.1 * abs(t - 2) + 0.02 * p  # correlation falls off with |tilt|
            ref[t] = (
                5.0
                + 0.3 * t
                + (1.0 + 0.2 * t**2)
                * (a * clean[t] / clean[t].std() + 0.6 * rng.normal(size=(H, W)))
            )
        pairs.append((clean.astype(np.float32), ref.astype(np.float32)))
    return pairs


def with_value(a: np.ndarray, where, value) -> np.ndarray:
    """A copy of ``a`` with ``a[where] = value``."""
    a = a.copy()
    a[where] = value
    return a
