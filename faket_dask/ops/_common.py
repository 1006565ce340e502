"""Checks shared by the local verbs: tilt counts and the input's own angles."""

from __future__ import annotations

import numpy as np

from faket_dask.angles import validate_angles
from faket_dask.errors import InputError

__all__ = ["angles_or_own", "check_tilt_counts"]


def check_tilt_counts(counts: dict[str, int]) -> None:
    """All inputs must have the same number of tilts (``counts``: what → tilts)."""
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise InputError(f"tilt counts differ ({listed}); give inputs with the same tilts")


def angles_or_own(explicit: np.ndarray | None, own: np.ndarray | None) -> np.ndarray:
    """The angles (T,) given on the command line, else the input's own, validated."""
    if explicit is not None:
        return explicit
    if own is not None:
        return validate_angles(own, source="input's tilt angles")
    raise InputError(
        "tilt angles are unknown; pass --angles START:STOP:STEP or --angles-file F.tlt"
    )
