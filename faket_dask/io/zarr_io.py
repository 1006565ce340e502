"""Zarr v3 tilt-series and volumes that ``xarray.open_zarr`` reads.

A tilt-series is a group holding one or more ``(tilt, y, x)`` float arrays with a
``tilt_angle`` coordinate in degrees and ``pixel_spacing`` (Å) in the attributes; a volume is a
group with ``(z, y, x)`` arrays. A path may point inside a store:
``data.zarr/samples/000012/tilts`` is the group ``samples/000012/tilts`` of ``data.zarr``.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from faket_dask.errors import InputError

if TYPE_CHECKING:
    import xarray as xr

ZarrMode = Literal["w", "w-", "a", "a-", "r+", "r"]

TILT_DIMS = ("tilt", "y", "x")
VOLUME_DIMS = ("z", "y", "x")


def is_zarr(path: str | Path) -> bool:
    """Whether a path names a Zarr store (or a group inside one) by its ``.zarr`` component."""
    return any(part.lower().endswith(".zarr") for part in Path(path).parts)


def split_zarr_path(path: str | Path) -> tuple[Path, str | None]:
    """Split ``data.zarr/a/b`` into the store root ``data.zarr`` and the group ``a/b``."""
    parts = Path(path).parts
    idx = max(i for i, p in enumerate(parts) if p.lower().endswith(".zarr"))
    root = Path(*parts[: idx + 1])
    group = "/".join(parts[idx + 1 :]) or None
    return root, group


def open_group_dataset(path: str | Path, *, eager: bool = False) -> xr.Dataset:
    """Open the group that a path names as a lazy xarray dataset.

    ``eager=True`` opens it without Dask (``chunks=None``): the arrays are still read only when
    indexed, but in the calling thread, never through a Dask scheduler.
    """
    import xarray as xr  # heavy (~1 s): on first use, so `import faket_dask` stays light

    root, group = split_zarr_path(path)
    if not (root / "zarr.json").is_file():
        raise InputError(f"{root} is not a Zarr v3 store (no zarr.json); check the path")
    if group and not (root / group / "zarr.json").is_file():
        raise InputError(f"{root} has no group {group!r}; check the path inside the store")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ds: xr.Dataset = xr.open_zarr(
                root,
                group=group,
                consolidated=False,
                decode_timedelta=False,
                chunks=None if eager else {},  # {}: the stored chunks (as by default)
            )
            return ds
    except (ValueError, KeyError, OSError) as err:
        raise InputError(f"{path} cannot be opened as an xarray dataset ({err})") from None


def pick_variable(ds: xr.Dataset, dims: tuple[str, ...], var: str | None, path: object) -> str:
    """The name of the one data variable with ``dims``, or the one ``var`` names."""
    candidates = [name for name, da in ds.data_vars.items() if tuple(da.dims) == dims]
    if var is not None:
        if var not in ds.data_vars:
            raise InputError(
                f"{path} has no array {var!r}; it has {', '.join(map(str, ds.data_vars)) or 'none'}"
            )
        if tuple(ds[var].dims) != dims:
            raise InputError(f"{path}: array {var!r} has dims {ds[var].dims}, expected {dims}")
        return var
    if len(candidates) == 1:
        return str(candidates[0])
    if not candidates:
        raise InputError(f"{path} holds no {dims} array; give a group with one (or --var)")
    names = ", ".join(map(str, candidates))
    raise InputError(f"{path} holds several {dims} arrays ({names}); choose one with --var")


def _prepare_target(path: Path, overwrite: bool) -> tuple[Path, str | None, ZarrMode]:
    root, group = split_zarr_path(path)
    target = root / group if group else root
    if (target / "zarr.json").exists():
        if not overwrite:
            raise InputError(f"{path} exists; choose another output or remove it first")
        shutil.rmtree(target)
    parent = root.parent
    if not parent.is_dir():
        raise InputError(f"output folder {parent} does not exist; create it first")
    mode: ZarrMode = "a" if (root / "zarr.json").exists() else "w-"
    return root, group, mode


def _chunks(shape: tuple[int, ...], edge: int = 512) -> tuple[int, ...]:
    return (1, *(min(s, edge) for s in shape[1:]))


def write_dataset(
    path: str | Path,
    arrays: dict[str, np.ndarray],
    dims: tuple[str, ...],
    *,
    coords: dict[str, tuple[str, np.ndarray, dict[str, str]]] | None = None,
    attrs: Mapping[str, object] | None = None,
    overwrite: bool = False,
) -> None:
    """Write arrays sharing ``dims`` as one xarray-readable Zarr v3 group."""
    import xarray as xr  # heavy (~1 s): on first use, so `import faket_dask` stays light

    root, group, mode = _prepare_target(Path(path), overwrite)
    ds = xr.Dataset(
        {name: (dims, np.asarray(a)) for name, a in arrays.items()},
        coords={k: (d, v, a) for k, (d, v, a) in (coords or {}).items()},
        attrs=dict(attrs or {}),
    )
    encoding = {name: {"chunks": _chunks(np.shape(a))} for name, a in arrays.items()}
    try:
        with warnings.catch_warnings():
            # zarr warns that consolidated metadata is not in the v3 spec; xarray relies on it
            warnings.filterwarnings("ignore", message="Consolidated metadata")
            _to_zarr(ds, root, group, mode, encoding)
    except PermissionError:
        raise InputError(f"{root} is not writable; choose another output") from None


def _to_zarr(
    ds: xr.Dataset,
    root: Path,
    group: str | None,
    mode: ZarrMode,
    encoding: dict[str, dict[str, Any]],
) -> None:
    # a fresh standalone store gets consolidated metadata so readers open it without a warning
    ds.to_zarr(
        root,
        group=group,
        mode=mode,
        zarr_format=3,
        consolidated=mode == "w-" and group is None,
        encoding=encoding,
    )
