"""Tilt-series and volumes from and to MRC or Zarr, chosen by the path's extension."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faket_dask.angles import TILT_FILE_SUFFIXES, read_tilt_file, write_tilt_file
from faket_dask.errors import InputError
from faket_dask.io.mrc import MRC_SUFFIXES, is_mrc, read_mrc, write_mrc
from faket_dask.io.ome import image_attrs
from faket_dask.io.zarr_io import (
    TILT_DIMS,
    VOLUME_DIMS,
    is_zarr,
    open_group_dataset,
    pick_variable,
    write_dataset,
)

SUPPORTED = ", ".join((*MRC_SUFFIXES, ".zarr"))


@dataclass
class TiltSeries:
    """A tilt-series with its geometry.

    Attributes
    ----------
    data
        `(T, H, W)` float32 tilts; H runs along the tilt axis (Y).
    angles_deg
        `(T,)` tilt angles in degrees, or ``None`` when the source had none.
    pixel_spacing
        Pixel spacing in Å, or ``None`` when unknown.
    """

    data: np.ndarray
    angles_deg: np.ndarray | None = None
    pixel_spacing: float | None = None


@dataclass
class Volume:
    """A `(Z, Y, X)` volume (density or labels) with its voxel size in Å (or ``None``)."""

    data: np.ndarray
    pixel_spacing: float | None = None


def _check_format(path: Path) -> None:
    if not (is_mrc(path) or is_zarr(path)):
        raise InputError(f"{path}: unknown extension {path.suffix!r}; use one of {SUPPORTED}")


def _sibling_angles(path: Path) -> np.ndarray | None:
    for suffix in TILT_FILE_SUFFIXES:
        candidate = path.with_suffix(suffix)
        if candidate.is_file():
            return read_tilt_file(candidate)
    return None


def _require_3d(data: np.ndarray, path: Path, what: str) -> None:
    if data.ndim != 3:
        raise InputError(f"{path} is {data.ndim}-D with shape {data.shape}; a {what} must be 3-D")


def _require_finite(data: np.ndarray, path: Path, what: str) -> None:
    """Refuse NaN/Inf at read time: every stage would fail on them later, less clearly."""
    if data.dtype.kind != "f":
        return
    finite = np.isfinite(data)
    if finite.all():
        return
    bad = np.argwhere(~finite)[0]
    raise InputError(
        f"{path} holds {int(data.size - finite.sum())} NaN or Inf value(s), the first in "
        f"{what} {int(bad[0])}; replace them (e.g. with the mean) or crop them out"
    )


def read_tilt_series(path: str | Path, *, var: str | None = None) -> TiltSeries:
    """Read a tilt-series from MRC (angles from a sibling ``.tlt``/``.rawtlt``) or Zarr.

    Parameters
    ----------
    path
        An MRC file, or a Zarr group (``data.zarr`` or ``data.zarr/samples/000012/tilts``).
    var
        For Zarr: which `(tilt, y, x)` array, when the group holds several.
    """
    path = Path(path)
    _check_format(path)
    if is_mrc(path):
        data, voxel = read_mrc(path)
        _require_3d(data, path, "tilt-series (T, H, W)")
        angles = _sibling_angles(path)
    else:
        ds = open_group_dataset(path, eager=True)  # no Dask: the pipeline reads in-thread
        name = pick_variable(ds, TILT_DIMS, var, path)
        data = np.asarray(ds[name].values)
        angles = np.asarray(ds["tilt_angle"].values) if "tilt_angle" in ds.coords else None
        spacing = ds[name].attrs.get("pixel_spacing", ds.attrs.get("pixel_spacing"))
        voxel = _spacing(spacing, path)
    if angles is not None and len(angles) != data.shape[0]:
        raise InputError(
            f"{path} has {data.shape[0]} tilts but its angle file lists {len(angles)}; "
            "fix the .tlt file"
        )
    data = np.asarray(data, dtype=np.float32)
    _require_finite(data, path, "tilt")
    return TiltSeries(data, angles, voxel)


def write_tilt_series(
    path: str | Path,
    series: TiltSeries,
    *,
    var: str = "tilts",
    overwrite: bool = False,
) -> None:
    """Write a tilt-series as MRC (plus a ``.tlt`` when angles are known) or as a Zarr group."""
    path = Path(path)
    _check_format(path)
    data = np.asarray(series.data)
    if is_mrc(path):
        tlt = path.with_suffix(".tlt")
        if series.angles_deg is not None and tlt.exists() and not overwrite:
            raise InputError(f"{tlt} exists; pass --overwrite or choose another output")
        write_mrc(path, data, series.pixel_spacing, overwrite=overwrite, stack=True)
        if series.angles_deg is not None:
            write_tilt_file(path.with_suffix(".tlt"), series.angles_deg)
        return
    coords = {}
    if series.angles_deg is not None:
        coords["tilt_angle"] = ("tilt", np.asarray(series.angles_deg), {"units": "degree"})
    attrs = {"pixel_spacing": series.pixel_spacing, "pixel_spacing_units": "angstrom"}
    attrs |= image_attrs(var, ("tilt", "y", "x"), series.pixel_spacing)
    write_dataset(path, {var: data}, TILT_DIMS, coords=coords, attrs=attrs, overwrite=overwrite)


def read_volume(path: str | Path, *, var: str | None = None) -> Volume:
    """Read a `(Z, Y, X)` volume from MRC or a Zarr group."""
    path = Path(path)
    _check_format(path)
    if is_mrc(path):
        data, voxel = read_mrc(path)
        _require_3d(data, path, "volume (Z, Y, X)")
        _require_finite(data, path, "Z slice")
        return Volume(data, voxel)
    ds = open_group_dataset(path)
    name = pick_variable(ds, VOLUME_DIMS, var, path)
    spacing = ds[name].attrs.get("pixel_spacing", ds.attrs.get("pixel_spacing"))
    data = np.asarray(ds[name].values)
    _require_finite(data, path, "Z slice")
    return Volume(data, _spacing(spacing, path))


def _spacing(value: object, path: Path) -> float | None:
    """A Zarr ``pixel_spacing`` attribute as Å, or one line naming what is wrong with it."""
    if value is None:
        return None
    try:
        spacing = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        spacing = float("nan")
    if not (np.isfinite(spacing) and spacing > 0):
        raise InputError(
            f"{path}: pixel_spacing {value!r} is not a positive number of Å; fix the attribute "
            "(or pass --pixel-spacing where the command has it)"
        )
    return spacing


def write_volume(
    path: str | Path,
    volume: Volume,
    *,
    var: str = "volume",
    overwrite: bool = False,
) -> None:
    """Write a `(Z, Y, X)` volume as MRC or as a Zarr group."""
    path = Path(path)
    _check_format(path)
    if is_mrc(path):
        write_mrc(path, volume.data, volume.pixel_spacing, overwrite=overwrite)
        return
    attrs = {"pixel_spacing": volume.pixel_spacing, "pixel_spacing_units": "angstrom"}
    attrs |= image_attrs(var, ("z", "y", "x"), volume.pixel_spacing)
    write_dataset(
        path, {var: np.asarray(volume.data)}, VOLUME_DIMS, attrs=attrs, overwrite=overwrite
    )
