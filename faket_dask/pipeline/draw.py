"""The per-sample draws and the documented fault-injection hook.

Tilt angles, style reference, noise model, SNR, tilt axis and shifts come from a stream keyed
by (seed, sample id).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from faket_dask.angles import parse_angles
from faket_dask.config import angle_specs
from faket_dask.pipeline.inputs import SharedInputs

if TYPE_CHECKING:


    from faket_dask.config import SimulationConfig


_DRAW_STREAM = 0x6472_6177  # "draw": the per-sample draws' stream, apart from noise streams


@dataclass(frozen=True)
class SampleSpec:
    """Everything one sample needs (small, picklable: no arrays)."""

    seed: int
    sample_id: int
    config: SimulationConfig
    store: str
    inputs: SharedInputs = field(default_factory=SharedInputs)
    run_id: str = ""
    fault: str | None = None
    base_dir: str | None = None


def _draw_rng(seed: int, sample_id: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(sample_id), _DRAW_STREAM])


def draw(spec: SampleSpec) -> dict[str, Any]:
    """What this sample uses, drawn from its own stream (a pure function of seed and id).

    Returns a JSON-able dict: ``angles_spec``, ``angles`` (deg), ``style_reference`` (index),
    ``noise_model`` (index), ``snr`` (or None), ``tilt_axis_deg``, ``shifts_px`` ((T, 2) y, x
    or None).
    """
    cfg = spec.config
    rng = _draw_rng(spec.seed, spec.sample_id)
    specs = angle_specs(cfg)
    a_idx = int(rng.integers(len(specs))) if len(specs) > 1 else 0
    angles = np.asarray(parse_angles(specs[a_idx]), dtype=np.float64)
    n_refs = max(1, len(spec.inputs.style_references))
    s_idx = int(rng.integers(n_refs)) if n_refs > 1 else 0
    n_models = max(1, len(spec.inputs.noise_models))
    m_idx = int(rng.integers(n_models)) if n_models > 1 else 0
    snr = cfg.noise.snr
    if isinstance(snr, tuple | list):
        lo, hi = float(snr[0]), float(snr[1])
        snr_v: float | None = float(rng.uniform(lo, hi)) if hi > lo else lo
    else:
        snr_v = None if snr is None else float(snr)
    axis = getattr(cfg.tilts, "tilt_axis_deg", 0.0)
    if isinstance(axis, tuple | list):
        lo, hi = float(axis[0]), float(axis[1])
        axis_v = float(rng.uniform(lo, hi)) if hi > lo else lo
    else:
        axis_v = float(axis or 0.0)
    shifts = None
    if cfg.tilts.misalignment_px > 0:
        shifts = rng.normal(0.0, float(cfg.tilts.misalignment_px), size=(angles.size, 2))
        shifts = np.round(shifts, 4).tolist()
    spec_repr = specs[a_idx] if isinstance(specs[a_idx], str) else list(specs[a_idx])
    # drawn last, so configs without mixes keep the draws they had before mixes existed
    n_mixes = len(cfg.sample.mixes)
    mix = int(rng.integers(n_mixes)) if n_mixes > 1 else (0 if n_mixes else None)
    return {
        "particle_mix": mix,
        "angles_choice": a_idx,
        "angles_spec": spec_repr,
        "angles": [float(a) for a in angles],
        "style_reference": s_idx,
        "noise_model": m_idx,
        "snr": snr_v,
        "tilt_axis_deg": axis_v,
        "shifts_px": shifts,
    }


def _apply_fault(spec: SampleSpec, phase: str) -> None:
    if not spec.fault:
        return
    for part in spec.fault.split(";"):
        kind, _, arg = part.strip().partition(":")
        if kind == "sleep" and phase == "write":
            time.sleep(float(arg))
        elif kind in ("fail", "exit") and phase == "start":
            ids = {int(x) for x in arg.split(",") if x.strip()}
            if spec.sample_id in ids:
                if kind == "exit":
                    os._exit(1)
                raise RuntimeError(f"injected failure of sample {spec.sample_id} ({spec.fault})")
