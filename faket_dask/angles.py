"""Tilt angles: parsing, validation and IMOD ``.tlt``/``.rawtlt`` files.

Angles are in degrees, one per tilt, strictly increasing and within ±90°. The sign convention
is IMOD's ``.tlt`` one as used by FakET: a point at offset ``(dz, dx)`` from the centre of a
``(Z, X)`` slice lands at detector offset ``dx·cos θ − dz·sin θ`` (see
:mod:`faket_dask.stages.projection`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from faket_dask.errors import InputError

TILT_FILE_SUFFIXES = (".tlt", ".rawtlt")

MAX_TILTS = 1000
"""The most tilts a series may have: ±90° at 0.18° steps (real series have at most ~200)."""


def parse_range(spec: str) -> np.ndarray:
    """Parse ``START:STOP:STEP`` into angles; STOP is included and must lie on the grid.

    Parameters
    ----------
    spec
        For example ``"-60:60:2"``, which gives 61 angles ``-60, -58, …, 60``.

    Returns
    -------
    np.ndarray
        `(T,)` float64 angles in degrees, ``angle_i = START + i·STEP``.
    """
    parts = spec.split(":")
    if len(parts) != 3:
        raise InputError(
            f"angle range {spec!r} is not START:STOP:STEP; write it like -60:60:2 (STOP included)"
        )
    try:
        start, stop, step = (float(p) for p in parts)
    except ValueError:
        raise InputError(
            f"angle range {spec!r} has a non-numeric part; write it like -60:60:2"
        ) from None
    if not all(math.isfinite(v) for v in (start, stop, step)):
        raise InputError(f"angle range {spec!r} holds NaN or Inf; write it like -60:60:2")
    if not step > 0:
        raise InputError(f"angle range {spec!r} needs a positive STEP; write it like -60:60:2")
    n_steps = (stop - start) / step
    if n_steps + 1 > MAX_TILTS:
        raise InputError(
            f"angle range {spec!r} makes {n_steps + 1:.3g} tilts, more than the limit of "
            f"{MAX_TILTS}; choose a larger STEP"
        )
    n = round(n_steps)
    if n < 0 or not math.isclose(n_steps, n, rel_tol=0, abs_tol=1e-6):
        raise InputError(
            f"angle range {spec!r}: STOP is not START + k·STEP for a whole k >= 0; "
            f"choose STOP on the grid (e.g. {start:g}:{start + max(n, 0) * step:g}:{step:g})"
        )
    return validate_angles(start + step * np.arange(n + 1, dtype=np.float64), source=spec)


def read_tilt_file(path: str | Path) -> np.ndarray:
    """Read an IMOD ``.tlt``/``.rawtlt`` file: one angle in degrees per line.

    Returns
    -------
    np.ndarray
        `(T,)` float64 angles.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"tilt-angle file {path} does not exist; give an IMOD .tlt/.rawtlt file")
    try:
        text_all = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(
            f"tilt-angle file {path} is not text; a .tlt file has one number per line"
        ) from None
    values: list[float] = []
    for lineno, line in enumerate(text_all.splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        try:
            values.append(float(text.split()[0]))
        except ValueError:
            raise InputError(
                f"{path}:{lineno}: {text!r} is not an angle; a .tlt file has one number per line"
            ) from None
    return validate_angles(np.asarray(values, dtype=np.float64), source=str(path))


def write_tilt_file(path: str | Path, angles_deg: Sequence[float] | np.ndarray) -> None:
    """Write angles as an IMOD ``.tlt`` file (one angle per line, two decimals)."""
    lines = [f"{float(a):8.2f}" for a in np.asarray(angles_deg, dtype=np.float64)]
    Path(path).write_text("\n".join(lines) + "\n")


def parse_angles(spec: str | Sequence[float] | np.ndarray | Path) -> np.ndarray:
    """Angles from a range string, a comma list, a list of numbers or a ``.tlt`` file path.

    Returns
    -------
    np.ndarray
        `(T,)` float64 angles in degrees, validated.
    """
    if isinstance(spec, Path):
        return read_tilt_file(spec)
    if isinstance(spec, str):
        text = spec.strip()
        if text.lower().endswith(TILT_FILE_SUFFIXES):
            return read_tilt_file(text)
        if ":" in text:
            return parse_range(text)
        try:
            values = [float(v) for v in text.replace(",", " ").split()]
        except ValueError:
            raise InputError(
                f"angles {spec!r} are neither START:STOP:STEP, a list of numbers nor a .tlt file"
            ) from None
        return validate_angles(np.asarray(values, dtype=np.float64), source=spec)
    return validate_angles(np.asarray(spec, dtype=np.float64), source="angle list")


def angle_array(angles_deg: object) -> npt.NDArray[np.float64]:
    """Angles (degrees) as a non-empty 1-D float64 array of finite numbers, in any order.

    Unlike :func:`validate_angles`, neither the order nor the ±90° range is checked: for angles
    that pick points on a fitted curve.
    """
    try:
        a = np.asarray(angles_deg, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"tilt angles must be numbers, got {angles_deg!r}") from None
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
        raise InputError("tilt angles must be a non-empty 1-D sequence of finite numbers")
    return a


def validate_angles(angles_deg: npt.ArrayLike, *, source: str = "angles") -> np.ndarray:
    """Check that angles are a finite, non-empty, strictly increasing 1-D list within ±90°."""
    angles = np.asarray(angles_deg, dtype=np.float64)
    if angles.ndim != 1 or angles.size == 0:
        raise InputError(f"{source}: no tilt angles given; give at least one angle in degrees")
    if angles.size > MAX_TILTS:
        raise InputError(f"{source}: {angles.size} tilt angles, more than the limit of {MAX_TILTS}")
    if not np.all(np.isfinite(angles)):
        raise InputError(f"{source}: tilt angles contain NaN or Inf; give finite angles")
    if np.any(np.abs(angles) > 90):
        bad = angles[np.abs(angles) > 90][0]
        raise InputError(f"{source}: tilt angle {bad:g}° is outside ±90°; give angles in degrees")
    if angles.size > 1 and np.any(np.diff(angles) <= 0):
        i = int(np.argmax(np.diff(angles) <= 0))
        raise InputError(
            f"{source}: tilt angles must be strictly increasing, but {angles[i]:g} is followed "
            f"by {angles[i + 1]:g}; sort them (the tilt order of a series follows its angles)"
        )
    return angles


def even_angles(n: int, start: float = -60.0, stop: float = 60.0) -> np.ndarray:
    """`(n,)` angles (deg) evenly from ``start`` to ``stop``, both included (one tilt: 0°).

    ``even_angles(61)`` is ``-60:60:2``, ``even_angles(41)`` is ``-60:60:3``.
    """
    if n < 1:
        raise InputError(f"a tilt-series needs at least one tilt (got {n})")
    if n == 1:
        return np.zeros(1)
    return np.round(np.linspace(start, stop, n), 9)
