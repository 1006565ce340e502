"""A standalone sample store (``faket-dask sample build``): one labeled volume and its table.

Layout of ``SAMPLE.zarr``::

    zarr.json    root attrs["faket_dask"]: the caller's attrs (version, seed, config...), the
                 layout's summary, the slab size and the checksums
    volume/      (z, y, x)   density (float32, optional), class_mask (uint8/uint16),
                             instance_mask (uint32); coordinates z, y, x in Å;
                             attrs: pixel_spacing (Å), units, classes {id: name}
    particles/   (particle)  the table (:func:`faket_dask.stages.particles.table_record`)

Both groups open with ``xarray.open_zarr(path, group=...)``. The volume is rendered and written
one Y slab at a time through :class:`faket_dask.io.writers.GridWriter` (a slab is one shard row),
so it never exists whole in memory; its checksums are read back from the store.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from faket_dask.errors import InputError
from faket_dask.io.jsonable import jsonable
from faket_dask.io.store import ATTRS_KEY, consolidate
from faket_dask.io.writers import GridWriter, write_particles
from faket_dask.stages.particles import table_record
from faket_dask.stages.sample import (
    GrandModelLayout,
    SampleLayout,
    default_slab_size,
    iter_slabs,
)

__all__ = ["CHUNK_ROWS", "write_layout", "write_sample_store"]

CHUNK_ROWS = 64  # a slab thicker than this is cut to whole multiples of it


def _slab_size(layout: SampleLayout | GrandModelLayout) -> int:
    """The configured slab size, or one under the default memory budget, in whole chunks."""
    cfg = layout.spec.sample.slab_size if layout.spec is not None else None
    size = int(cfg or default_slab_size(layout.shape))
    if size > CHUNK_ROWS:
        size -= size % CHUNK_ROWS
    return size


def write_layout(
    parent: Any, layout: SampleLayout | GrandModelLayout, *, save_density: bool = True
) -> dict[str, Any]:
    """Render a layout slab by slab into ``parent/volume`` and write ``parent/particles``.

    Returns ``{"slab_size": n, "checksums": {array: sha256, "particles/<column>": ...}}``.
    """
    slab_size = _slab_size(layout)
    dtypes: dict[str, Any] = {"class_mask": layout.class_dtype, "instance_mask": np.uint32}
    if save_density:
        dtypes = {"density": np.float32, **dtypes}
    classes = {str(k): str(v) for k, v in layout.classes.items()}
    writer = GridWriter(
        parent,
        "volume",
        layout.shape,
        dtypes,
        layout.pixel_spacing,
        rows=slab_size,
        attrs={"classes": classes},
    )
    for y0, _, density, class_mask, instance_mask in iter_slabs(layout, slab_size):
        slabs = {"density": density, "class_mask": class_mask, "instance_mask": instance_mask}
        writer.write(y0, {key: slabs[key] for key in dtypes})
        del density, class_mask, instance_mask, slabs
    spec = layout.spec
    record = table_record(
        layout.particles,
        shape=layout.shape,
        pixel_spacing=layout.pixel_spacing,
        classes=layout.classes,
        tomo_name=f"sample_{0 if spec is None else spec.sample_id:06d}",
    )
    sums = write_particles(parent, record.columns, star=record.star, attrs=record.attrs)
    checksums = {**writer.checksums(), **{f"particles/{k}": v for k, v in sums.items()}}
    return {"slab_size": slab_size, "checksums": checksums}


def write_sample_store(
    path: str | os.PathLike[str],
    layout: SampleLayout | GrandModelLayout,
    *,
    attrs: Mapping[str, Any] | None = None,
    save_density: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a standalone sample store: root attrs, volume, table; consolidated at the end.

    Root ``attrs["faket_dask"]`` holds ``attrs`` plus the layout's summary and checksums, and
    is returned.
    """
    p = Path(path)
    if p.exists():
        if not overwrite:
            raise InputError(f"{p} exists; pass --overwrite or choose another output")
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    if not p.parent.is_dir():
        raise InputError(f"output folder {p.parent} does not exist; create it first")
    root = zarr.open_group(str(p), mode="w", zarr_format=3)
    result = write_layout(root, layout, save_density=save_density)
    record = {"kind": "sample", **dict(attrs or {}), "layout": layout.summary(), **result}
    stored: dict[str, Any] = jsonable(record)
    root.attrs[ATTRS_KEY] = stored
    consolidate(p)
    return stored
