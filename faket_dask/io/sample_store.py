"""Writing a sample (volume group + particle table) into Zarr v3, slab by slab.

Layout of a sample (inside a dataset's ``samples/<id>/`` or as a standalone ``SAMPLE.zarr``)::

    volume/      (z, y, x)   density (float32, optional), class_mask (uint8/uint16),
                             instance_mask (uint32); coordinates z, y, x in Å;
                             attrs: pixel_spacing (Å), units, classes {id: name}
    particles/   (particle)  one array per table column (strings as integer codes with
                             their categories in attrs); attrs["star"]: the STAR text
                             (volume frame) when the table has at most STAR_ATTR_MAX_ROWS rows

Both groups open with ``xarray.open_zarr(path, group=...)``. The volume is written as it is
rendered, one Y slab at a time (chunks of 64 rows, or of the slab when it is thinner; slabs
are whole chunks), so it never exists whole in memory. Its checksums are SHA-256 of each
array's C-order bytes (as ``faket_dask.io.store.array_checksum``), computed by reading it back
in Z blocks.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faket_dask.errors import InputError
from faket_dask.io.store import ATTRS_KEY, consolidate, write_particles

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

    from faket_dask.stages.sample import GrandModelLayout, SampleLayout

__all__ = [
    "STAR_ATTR_MAX_ROWS",
    "VolumeWriter",
    "open_volume",
    "read_particles",
    "write_layout",
    "write_sample_store",
]

STAR_ATTR_MAX_ROWS = 20000
CHUNK_ROWS = 64


class VolumeWriter:
    """The ``volume`` group of a sample, filled slab by slab along Y.

    Parameters
    ----------
    parent
        The zarr group to create ``name`` in.
    shape
        ``(Z, Y, X)``.
    pixel_spacing
        Å per voxel.
    class_dtype
        uint8 or uint16.
    save_density
        Also store the density.
    classes
        Class id -> name (group attrs).
    """

    def __init__(
        self,
        parent: Any,
        shape: tuple[int, int, int],
        pixel_spacing: float,
        *,
        class_dtype: np.dtype | str = np.uint8,
        save_density: bool = True,
        classes: Mapping[int, str] | None = None,
        name: str = "volume",
        attrs: Mapping[str, Any] | None = None,
        chunk_rows: int = CHUNK_ROWS,
    ) -> None:
        nz, ny, nx = (int(s) for s in shape)
        self.shape = (nz, ny, nx)
        group_attrs = {
            "pixel_spacing": float(pixel_spacing),
            "units": "angstrom",
            "classes": {str(k): str(v) for k, v in (classes or {}).items()},
            **dict(attrs or {}),
        }
        self.group = parent.create_group(name, attributes=group_attrs)
        for dim, n in zip(("z", "y", "x"), self.shape, strict=True):
            self.group.create_array(
                dim,
                shape=(n,),
                dtype="f8",
                chunks=(n,),
                dimension_names=(dim,),
                attributes={"units": "angstrom"},
                fill_value=np.nan,
            )[...] = np.arange(n) * float(pixel_spacing)
        chunks = (min(nz, 64), min(ny, max(1, int(chunk_rows))), min(nx, 512))
        dtypes = {"class_mask": np.dtype(class_dtype), "instance_mask": np.dtype(np.uint32)}
        if save_density:
            dtypes = {"density": np.dtype(np.float32), **dtypes}
        self.arrays = {
            key: self.group.create_array(
                key,
                shape=self.shape,
                dtype=dt,
                chunks=chunks,
                dimension_names=("z", "y", "x"),
                fill_value=0,
            )
            for key, dt in dtypes.items()
        }
        self.rows_written = 0

    def write(
        self, y0: int, density: Any, class_mask: np.ndarray, instance_mask: np.ndarray
    ) -> None:
        """Write rows ``[y0, y0 + rows)`` (slabs in order, any size)."""
        if y0 != self.rows_written:
            raise ValueError(f"slabs must be written in order (expected row {self.rows_written})")
        data = {"density": density, "class_mask": class_mask, "instance_mask": instance_mask}
        rows = int(np.shape(class_mask)[1])
        for key, arr in self.arrays.items():
            value = data[key]
            if hasattr(value, "detach"):  # a torch tensor
                value = value.detach().cpu().numpy()
            arr[:, y0 : y0 + rows] = np.asarray(value, dtype=arr.dtype)
        self.rows_written = y0 + rows

    def checksums(self, block_bytes: int = 256 * 1024**2) -> dict[str, str]:
        """SHA-256 of each array's C-order bytes (read back in Z blocks)."""
        if self.rows_written != self.shape[1]:
            raise ValueError(f"only {self.rows_written} of {self.shape[1]} rows written")
        out = {}
        nz, ny, nx = self.shape
        for key, arr in self.arrays.items():
            h = hashlib.sha256()
            step = max(1, block_bytes // max(1, ny * nx * arr.dtype.itemsize))
            for z0 in range(0, nz, step):
                h.update(np.ascontiguousarray(arr[z0 : z0 + step]).tobytes())
            out[key] = h.hexdigest()
        return out


def _star_text(layout: SampleLayout | GrandModelLayout) -> str | None:
    from faket_dask.stages.particles import to_star

    if len(layout.particles) > STAR_ATTR_MAX_ROWS:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "particles.star"
        to_star(
            layout.particles,
            path,
            "volume",
            shape=layout.shape,
            pixel_spacing=layout.pixel_spacing,
            kinds=None,
        )
        return path.read_text()


def write_layout(
    parent: Any,
    layout: SampleLayout | GrandModelLayout,
    *,
    slab_size: int | None = None,
    save_density: bool = True,
    on_slab: Callable[[int, int, np.ndarray], None] | None = None,
    checksums: bool = True,
) -> dict[str, Any]:
    """Render a layout slab by slab into ``parent/volume`` and write ``parent/particles``.

    ``on_slab(y0, y1, density)`` is called with each slab's density (float32 NumPy) before
    it is dropped, e.g. to project it. Returns ``{"checksums": {...}, "slab_size": n}``.
    """
    from faket_dask.stages.sample import default_slab_size, iter_slabs

    if slab_size is None:
        cfg = layout.spec.sample.slab_size if layout.spec is not None else None
        slab_size = cfg or default_slab_size(layout.shape)
        if slab_size > CHUNK_ROWS:  # whole chunks per slab
            slab_size -= slab_size % CHUNK_ROWS
    writer = VolumeWriter(
        parent,
        layout.shape,
        layout.pixel_spacing,
        class_dtype=layout.class_dtype,
        save_density=save_density,
        classes=layout.classes,
        chunk_rows=min(CHUNK_ROWS, int(slab_size)),
    )
    for y0, y1, density, class_mask, instance_mask in iter_slabs(layout, slab_size):
        writer.write(y0, density, class_mask, instance_mask)
        if on_slab is not None:
            on_slab(y0, y1, density)
        del density, class_mask, instance_mask
    table = layout.particles
    columns = {c: table[c].to_numpy() for c in table.columns}
    sums = write_particles(parent, columns, star=_star_text(layout))
    out: dict[str, Any] = {"slab_size": int(slab_size)}
    if checksums:
        out["checksums"] = {**writer.checksums(), **{f"particles/{k}": v for k, v in sums.items()}}
    return out


def write_sample_store(
    path: str | os.PathLike[str],
    layout: SampleLayout | GrandModelLayout,
    *,
    attrs: Mapping[str, Any] | None = None,
    slab_size: int | None = None,
    save_density: bool = True,
    overwrite: bool = False,
    on_slab: Callable[[int, int, np.ndarray], None] | None = None,
) -> dict[str, Any]:
    """Write a standalone sample store (``faket-dask sample build``): root attrs, volume, table.

    Root ``attrs["faket_dask"]`` holds ``attrs`` plus the layout's summary and checksums;
    metadata is consolidated at the end.
    """
    import json
    import shutil

    import zarr

    p = Path(path)
    if p.exists():
        if not overwrite:
            raise InputError(f"{p} exists; pass --overwrite or choose another output")
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    if not p.parent.is_dir():
        raise InputError(f"output folder {p.parent} does not exist; create it first")
    root = zarr.open_group(str(p), mode="w", zarr_format=3)
    result = write_layout(
        root, layout, slab_size=slab_size, save_density=save_density, on_slab=on_slab
    )
    record = {"kind": "sample", **dict(attrs or {}), "layout": layout.summary(), **result}
    root.attrs[ATTRS_KEY] = json.loads(json.dumps(record, default=_json_default))
    consolidate(p)
    return record


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def open_volume(path: str | os.PathLike[str], group: str = "volume") -> xr.Dataset:
    """The ``(z, y, x)`` volume group as a lazy xarray Dataset."""
    import xarray as xr

    return xr.open_zarr(str(path), group=group, consolidated=False)


def read_particles(path: str | os.PathLike[str], group: str = "particles") -> pd.DataFrame:
    """The particle table of a sample group, strings decoded from their codes."""
    import pandas as pd
    import zarr

    from faket_dask.stages.particles import COLUMNS

    try:
        g = zarr.open_group(str(path), path=group, mode="r", use_consolidated=False)
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        raise InputError(f"{path}: no particle table at group {group!r}") from None
    data = {}
    for key, arr in g.arrays():
        values = np.asarray(arr[...])
        cats = arr.attrs.get("categories")
        if cats is not None:
            values = (
                np.asarray(cats, dtype=object)[values] if len(values) else values.astype(object)
            )
        data[key] = values
    order = [c for c in COLUMNS if c in data] + [c for c in data if c not in COLUMNS]
    return pd.DataFrame({c: data[c] for c in order})
