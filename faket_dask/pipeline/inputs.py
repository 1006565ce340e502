"""What every sample of a dataset shares: weights, style references and noise models.

Resolved once by the client (:func:`resolve_inputs`) and materialised into the store
(:func:`materialize_inputs`), so that workers need nothing but the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faket_dask.config import SimulationConfig, union_angles
from faket_dask.demo import DEMO_REFERENCE_SEED, DEMO_SNR
from faket_dask.errors import InputError
from faket_dask.io import TiltSeries, read_tilt_series, write_tilt_series
from faket_dask.io import store as st
from faket_dask.stages.calibration import Calibration, calibrate
from faket_dask.stages.noise import NoiseModel, fit_noise_model_from_reference
from faket_dask.stages.reference_synth import demo_reference
from faket_dask.stages.style.weights import resolve_weights


class WeightsFallbackWarning(UserWarning):
    """ImageNet weights were asked for, are not available, and random weights stand in.

    Loud on purpose: the styled tilts are then FakET's FAKET_RANDOM ablation, not FakET.
    """


@dataclass(frozen=True)
class SharedInputs:
    """Inputs every sample shares: small and picklable (paths and records, never arrays).

    Attributes
    ----------
    weights_spec
        What workers pass to :func:`~faket_dask.stages.style.weights.load_vgg19`: ``imagenet``,
        ``random``
        or an absolute path (after a fallback, ``random``).
    weights_seed
        Seed of random weights.
    weights
        The weights record (name, path, SHA-256, seed, requested, fallback reason).
    style_references
        One entry per style reference: ``{"spec", "path", "shape", "sha256", ...}``; ``path``
        is what the worker reads (``<store>/inputs/demo_reference`` for ``demo``).
    noise_models
        One entry per noise model: ``{"spec", "path", "sha256"}`` (paths inside the store).
    """

    weights_spec: str | None = None
    weights_seed: int = 0
    weights: dict[str, Any] = field(default_factory=dict)
    style_references: tuple[dict[str, Any], ...] = ()
    noise_models: tuple[dict[str, Any], ...] = ()

    def to_attrs(self) -> dict[str, Any]:
        """Root-attr record of the shared inputs."""
        return {
            "weights": {**self.weights, "spec": self.weights_spec, "seed": self.weights_seed},
            "style_references": [dict(r) for r in self.style_references],
            "noise_models": [dict(m) for m in self.noise_models],
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> SharedInputs:
        """Read the record back (a resumed run uses exactly what the first run resolved)."""
        w = dict(attrs.get("weights") or {})
        return cls(
            weights_spec=w.get("spec"),
            weights_seed=int(w.get("seed") or 0),
            weights={k: v for k, v in w.items() if k not in ("spec",)},
            style_references=tuple(dict(r) for r in attrs.get("style_references") or ()),
            noise_models=tuple(dict(m) for m in attrs.get("noise_models") or ()),
        )


def _style_specs(config: SimulationConfig) -> list[str]:
    return list(config.style.references) or [config.style.reference]


def _noise_specs(config: SimulationConfig) -> list[str]:
    specs = list(config.noise.models) or [config.noise.model or "demo"]
    return [s or "demo" for s in specs]


def _resolve_weights(config: SimulationConfig) -> tuple[str, dict]:
    spec = config.style.weights
    try:
        info = resolve_weights(spec, seed=config.seed, timeout=5.0)
    except InputError as err:
        if config.style.weights_fallback != "random" or spec.strip().lower() != "imagenet":
            raise
        message = (
            f"WARNING: ImageNet VGG-19 weights are not available ({err}).\nFalling back to "
            "RANDOM weights: the styled tilts are FakET's FAKET_RANDOM ablation, not FakET. "
            "This is recorded in the store."
        )
        warnings.warn(WeightsFallbackWarning(message), stacklevel=3)
        info = resolve_weights("random", seed=config.seed)
        record = {**info.to_attrs(), "requested": spec, "fallback": str(err)}
        return "random", record
    record = {**info.to_attrs(), "requested": spec, "fallback": None}
    if info.name == "random":
        return "random", record
    if info.name == "imagenet":
        return "imagenet", record
    return str(info.path), record


def resolve_inputs(
    config: SimulationConfig,
    store: str | os.PathLike[str],
) -> SharedInputs:
    """Check and resolve the shared inputs on the client, before the store exists.

    Weights are resolved (downloaded when allowed; an ImageNet fallback to random weights is
    a :class:`WeightsFallbackWarning` and recorded); style references and noise models must
    exist. The demo inputs are made later by :func:`materialize_inputs`, inside the store.
    """
    weights_spec: str | None = None
    weights: dict[str, Any] = {}
    if config.style.enabled:
        weights_spec, weights = _resolve_weights(config)
    refs: list[dict[str, Any]] = []
    if config.style.enabled:
        for spec in _style_specs(config):
            if spec == "demo":
                refs.append({"spec": "demo"})
                continue
            p = Path(spec).expanduser().resolve()
            if not p.exists():
                raise InputError(f"style reference {spec} does not exist; check style.reference")
            refs.append({"spec": spec, "path": str(p)})
    models: list[dict[str, Any]] = []
    for spec in _noise_specs(config):
        if spec == "demo":
            models.append({"spec": "demo"})
            continue
        if spec == "calibrated":
            models.append(_resolve_calibration(config))
            continue
        p = Path(spec).expanduser().resolve()
        NoiseModel.load(p)  # validates; raises InputError naming the problem
        models.append({"spec": spec, "source": str(p)})
    return SharedInputs(
        weights_spec=weights_spec,
        weights_seed=int(config.seed),
        weights=weights,
        style_references=tuple(refs),
        noise_models=tuple(models),
    )


def materialize_inputs(
    inputs: SharedInputs, config: SimulationConfig, store: str | os.PathLike[str]
) -> SharedInputs:
    """Write what workers read into ``<store>/inputs/`` (client only) and record identities.

    The demo reference (``faket_dask.stages.reference_synth.demo_reference`` over every angle a
    sample may use) and noise models (copied, or the demo model fitted on the demo reference at
    :data:`DEMO_SNR`) land in the store, so that workers need nothing but the store.
    """
    root = Path(store).resolve()
    demo = _DemoReference(config)
    refs = [_materialize_reference(ref, root, demo) for ref in inputs.style_references]
    models = [
        _materialize_noise_model(i, m, root, demo, refs) for i, m in enumerate(inputs.noise_models)
    ]
    return SharedInputs(
        weights_spec=inputs.weights_spec,
        weights_seed=inputs.weights_seed,
        weights=inputs.weights,
        style_references=tuple(refs),
        noise_models=tuple(models),
    )


class _DemoReference:
    """The built-in demo reference over every angle a sample may use, made on first use."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self._series: TiltSeries | None = None

    def get(self) -> TiltSeries:
        """The demo reference `(T, H, W)` (made once)."""
        if self._series is None:
            config = self.config
            h, w = config.tilts.shape
            self._series = demo_reference(
                (int(h), int(w)),
                union_angles(config),
                config.tilts.pixel_spacing,
                DEMO_REFERENCE_SEED,
            )
        return self._series


def _materialize_reference(
    ref: Mapping[str, Any], root: Path, demo: _DemoReference
) -> dict[str, Any]:
    """A style reference's record: the demo one written into the store; shape and SHA-256."""
    if ref.get("spec") == "demo":
        series = demo.get()
        path = root / "inputs" / "demo_reference"
        if not (path / "zarr.json").exists():
            write_tilt_series(path, series, var="tilts")
    else:
        series = read_tilt_series(ref["path"])
        path = Path(ref["path"])
    data = np.ascontiguousarray(series.data, dtype=np.float32)
    return {
        **ref,
        "path": str(path),
        "shape": list(data.shape),
        "sha256": hashlib.sha256(data.tobytes()).hexdigest(),
        "angles_known": series.angles_deg is not None,
        "pixel_spacing": series.pixel_spacing,
    }


def _materialize_noise_model(
    i: int,
    m: Mapping[str, Any],
    root: Path,
    demo: _DemoReference,
    refs: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Noise model ``i`` into ``inputs/noise_model_{i:02d}`` (the demo one fitted first).

    The calibrated model's group holds the calibration (``attrs["calibration"]``), loaded from
    ``noise.calibration`` or made here from the first (materialised) style reference.
    """
    key = "noise_model"
    model: NoiseModel | Calibration
    if m.get("spec") == "calibrated":
        key, model = "calibration", _calibration_for(m, refs, demo.config)
    elif m.get("spec") == "demo":
        series = demo.get()
        assert series.angles_deg is not None  # the demo reference has its angles
        model = fit_noise_model_from_reference(
            series.data,
            series.angles_deg,
            DEMO_SNR,
            provenance={"source": "faket-dask built-in demo reference"},
        )
    else:
        model = NoiseModel.load(m["source"])
    # a zarr group whose attrs hold the model: the store stays a clean zarr hierarchy
    text = model.model_dump_json()
    name = f"inputs/noise_model_{i:02d}"
    st.write_input_group(root, name, {key: json.loads(text)})
    return {**m, "path": str(root / name), "sha256": hashlib.sha256(text.encode()).hexdigest()}


def _resolve_calibration(config: SimulationConfig) -> dict[str, Any]:
    """The calibrated noise model's entry: a checked micro.json, or calibrate at the start."""
    if config.noise.calibration is None:
        if not config.style.enabled:
            raise InputError(
                "noise.model 'calibrated' without noise.calibration calibrates the style "
                "reference, but style is disabled; give noise.calibration (reference calibrate)"
            )
        return {"spec": "calibrated", "source": None}
    p = Path(config.noise.calibration).expanduser().resolve()
    Calibration.load(p)  # validates; raises InputError naming the problem
    return {"spec": "calibrated", "source": str(p)}


def _calibration_for(
    m: Mapping[str, Any], refs: Sequence[Mapping[str, Any]], config: SimulationConfig
) -> Calibration:
    """Load the calibration, or calibrate the first style reference (already materialised)."""
    if m.get("source"):
        return Calibration.load(m["source"])
    series = read_tilt_series(refs[0]["path"])
    if series.angles_deg is None:
        raise InputError(f"style reference {refs[0]['spec']} has no tilt angles to calibrate")
    spacing = series.pixel_spacing or config.tilts.pixel_spacing
    return calibrate(
        series.data, series.angles_deg, spacing, provenance={"source": refs[0]["spec"]}
    )
