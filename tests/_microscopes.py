"""Three `reference synth` microscopes with known parameters (shared by the realism tests)."""

from __future__ import annotations

import numpy as np

ANGLES = np.arange(-50.0, 51.0, 10.0)

MICROSCOPES = {
    # name: synth_reference keyword arguments (defocus, dose, pixel spacing, MTF, thickness)
    "df1.5": {"defocus_um": 1.5, "pixel_spacing": 4.0, "dose": 200.0, "mtf_nu_c": 0.3,
              "thickness_nm": 80.0},
    "df3": {"defocus_um": 3.0, "pixel_spacing": 6.0, "dose": 120.0, "mtf_nu_c": 0.4,
            "thickness_nm": 120.0},
    "df5": {"defocus_um": 5.0, "pixel_spacing": 8.0, "dose": 80.0, "mtf_nu_c": 0.5,
            "thickness_nm": 150.0},
}


def synth(name: str, seed: int, size: int = 256, angles: np.ndarray = ANGLES):
    """``(series, truth)`` of one microscope (truth: synth_reference's per-tilt record)."""
    from faket_dask.stages.reference_synth import SynthOptions, synth_reference

    truth: dict = {}
    s = synth_reference(
        (angles.size, size, size), angles, SynthOptions(seed=seed, **MICROSCOPES[name]), truth=truth
    )
    return s, truth
