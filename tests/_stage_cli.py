"""Shared helpers of the stage-verb CLI tests (tests/cli/test_project.py, test_noise.py, ...)."""

from __future__ import annotations

import os
import subprocess

import numpy as np
from _cli import run_cli_checked

from faket_dask.angles import parse_angles
from faket_dask.io import TiltSeries, write_tilt_series

ANGLES = "-30:30:15"


def run_cli(*args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    # CPU results are reproducible for a fixed thread count: pin it on both sides
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return run_cli_checked(*args, check=check, env=env, timeout=180)


def phantom() -> np.ndarray:
    rng = np.random.default_rng(7)
    vol = np.zeros((8, 20, 24), np.float32)
    for _ in range(6):
        z, y, x = rng.integers(2, 6), rng.integers(3, 17), rng.integers(4, 20)
        vol[z - 1 : z + 2, y - 2 : y + 2, x - 2 : x + 3] += rng.uniform(0.5, 2.0)
    return vol


def reference_like(noiseless: np.ndarray) -> np.ndarray:
    """A stand-in 'real' series of the same sample: blurred signal plus strong noise."""
    rng = np.random.default_rng(11)
    return (0.3 * noiseless + rng.normal(0, 1.0, noiseless.shape) + 5.0).astype(np.float32)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one stderr line of a bad-input run (exit 2, no traceback)."""
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    return lines[0]


def write_good(tmp_path) -> np.ndarray:
    """good.mrc: 5 random tilts of 20x24 at 8 Å with ANGLES; returns the data."""
    good = np.random.default_rng(0).normal(size=(5, 20, 24)).astype(np.float32)
    write_tilt_series(tmp_path / "good.mrc", TiltSeries(good, parse_angles(ANGLES), 8.0))
    return good
