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


@dataclass(frozen=True)
class SampleDraw:
    """What one sample drew from its own stream (:func:`draw`): which inputs, angles and shifts.

    Attributes
    ----------
    particle_mix
        Index of the particle mix (``sample.mixes``), or ``None`` when the config has none.
    angles_choice
        Index of the tilt scheme among the config's angle choices.
    angles_spec
        That scheme as the config gives it (``"START:STOP:STEP"`` or a list of angles).
    angles
        `(T,)` its tilt angles in degrees.
    style_reference, noise_model
        Indices of the style reference and the noise model among the shared inputs.
    snr
        The SNR the noise model is rescaled to, or ``None`` (the model's own).
    tilt_axis_deg
        In-plane rotation of the tilt axis, in degrees.
    shifts_px
        `(T, 2)` per-tilt ``(y, x)`` misalignment shifts in pixels, or ``None``.
    """

    particle_mix: int | None
    angles_choice: int
    angles_spec: str | tuple[float, ...]
    angles: tuple[float, ...]
    style_reference: int
    noise_model: int
    snr: float | None
    tilt_axis_deg: float
    shifts_px: tuple[tuple[float, float], ...] | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able record stored in the sample's attributes (``drew``), keys in order."""
        return {
            "particle_mix": self.particle_mix,
            "angles_choice": self.angles_choice,
            "angles_spec": (
                self.angles_spec if isinstance(self.angles_spec, str) else list(self.angles_spec)
            ),
            "angles": list(self.angles),
            "style_reference": self.style_reference,
            "noise_model": self.noise_model,
            "snr": self.snr,
            "tilt_axis_deg": self.tilt_axis_deg,
            "shifts_px": None if self.shifts_px is None else [list(s) for s in self.shifts_px],
        }


def draw(spec: SampleSpec) -> SampleDraw:
    """What this sample uses, drawn from its own stream (a pure function of seed and id)."""
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
        drawn = rng.normal(0.0, float(cfg.tilts.misalignment_px), size=(angles.size, 2))
        shifts = tuple((float(y), float(x)) for y, x in np.round(drawn, 4).tolist())
    spec_a = specs[a_idx]
    spec_repr = spec_a if isinstance(spec_a, str) else tuple(float(a) for a in spec_a)
    # drawn last, so configs without mixes keep the draws they had before mixes existed
    n_mixes = len(cfg.sample.mixes)
    mix = int(rng.integers(n_mixes)) if n_mixes > 1 else (0 if n_mixes else None)
    return SampleDraw(
        particle_mix=mix,
        angles_choice=a_idx,
        angles_spec=spec_repr,
        angles=tuple(float(a) for a in angles),
        style_reference=s_idx,
        noise_model=m_idx,
        snr=snr_v,
        tilt_axis_deg=axis_v,
        shifts_px=shifts,
    )


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
