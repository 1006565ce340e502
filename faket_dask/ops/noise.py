"""``noise fit`` and ``noise apply`` on local files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faket_dask.errors import InputError
from faket_dask.io import TiltSeries, read_tilt_series, write_tilt_series
from faket_dask.ops._common import angles_or_own, check_tilt_counts
from faket_dask.options import NoiseOptions

if TYPE_CHECKING:
    from faket_dask.stages.noise import NoiseModel

__all__ = ["apply", "fit_from_pairs", "fit_from_reference"]


def fit_from_reference(
    reference: Path,
    output: Path,
    snr: float,
    *,
    angles_deg: np.ndarray | None = None,
    degree: int = 2,
    var: str | None = None,
) -> NoiseModel:
    """Fit the noise model from a real tilt-series alone at an assumed ``snr``; save it."""
    ref = read_tilt_series(reference, var=var)
    tilt_angles = angles_or_own(angles_deg, ref.angles_deg)
    check_tilt_counts({str(reference): ref.data.shape[0], "angles": len(tilt_angles)})
    # torch and the stages: loaded once the inputs are read, so that bad input fails fast
    from faket_dask.stages.noise import fit_noise_model_from_reference

    model = fit_noise_model_from_reference(ref.data, tilt_angles, snr, degree=degree)
    model.save(output)
    return model


def fit_from_pairs(
    clean: list[Path],
    noisy: list[Path],
    output: Path,
    *,
    angles_deg: np.ndarray | None = None,
    degree: int = 2,
    var: str | None = None,
) -> NoiseModel:
    """Fit the noise model from (noiseless, reference) tilt-series pairs; save it."""
    pairs = []
    own = None
    for c, n in zip(clean, noisy, strict=True):
        cs, ns = read_tilt_series(c, var=var), read_tilt_series(n, var=var)
        check_tilt_counts({str(c): cs.data.shape[0], str(n): ns.data.shape[0]})
        own = own if own is not None else cs.angles_deg
        pairs.append((cs.data, ns.data))
    tilt_angles = angles_or_own(angles_deg, own)
    check_tilt_counts({str(clean[0]): pairs[0][0].shape[0], "angles": len(tilt_angles)})
    provenance = {"clean": [str(c) for c in clean], "noisy": [str(n) for n in noisy]}
    # torch and the stages: loaded once the inputs are read, so that bad input fails fast
    from faket_dask.stages.noise import fit_noise_model

    model = fit_noise_model(pairs, tilt_angles, degree=degree, provenance=provenance)
    model.save(output)
    return model


def apply(opts: NoiseOptions) -> dict[str, Path]:
    """Draw the noise of ``opts.outputs``' modalities over the whole series; write each.

    ``opts.model`` is FakET's ``noise.json`` or a ``micro.json`` from ``reference
    calibrate`` (the calibrated model: keyed streams only).

    Returns the modality → path written, in the order of ``opts.outputs``.
    """
    series = read_tilt_series(opts.noiseless, var=opts.var)
    tilt_angles = angles_or_own(opts.angles_deg, series.angles_deg)
    check_tilt_counts({str(opts.noiseless): series.data.shape[0], "angles": len(tilt_angles)})
    # torch and the stages: loaded once the inputs are read, so that bad input fails fast
    import torch

    from faket_dask.pipeline import torch_device
    from faket_dask.stages.calibrated_noise import (
        CalibratedNoiseOptions,
        apply_calibrated_noise,
        load_noise_model,
    )
    from faket_dask.stages.noise import NoiseModel
    from faket_dask.stages.noise_apply import NoiseDraw, apply_noise

    noise_model = load_noise_model(opts.model)
    tensor = torch.from_numpy(series.data).to(torch_device(opts.device))
    modalities = tuple(opts.outputs)
    if isinstance(noise_model, NoiseModel):
        out = apply_noise(
            tensor,
            noise_model,
            tilt_angles,
            seed=opts.seed,
            sample_id=opts.sample_id,
            options=NoiseDraw(
                rng="faket" if opts.rng == "faket" else "keyed", modalities=modalities
            ),
        )
    else:
        if opts.rng != "keyed":
            raise InputError("the calibrated model draws keyed streams; drop --rng faket")
        out = apply_calibrated_noise(
            tensor,
            noise_model,
            tilt_angles,
            opts.seed,
            opts.sample_id,
            CalibratedNoiseOptions(modalities=modalities, pixel_spacing=series.pixel_spacing),
        )
    for name, path in opts.outputs.items():
        result = TiltSeries(out[name].cpu().numpy(), tilt_angles, series.pixel_spacing)
        write_tilt_series(path, result, var=name, overwrite=opts.overwrite)
    return dict(opts.outputs)
