"""OME-Zarr pyramids and labels for a grid group of the dataset store (new arrays only).

A grid group (``volume``, ``tomogram``) keeps its ``(z, y, x)`` arrays as they are (one xarray
dataset per grid); this module adds, beside them::

    <grid>/multiscale/1, multiscale/2      the primary image at ×2 and ×4 (2x2x2 block means;
                                           block modes when the primary is the class mask)
    <grid>/labels/                         ome.labels: the mask label images
      class_mask/0, 1, 2                   a copy of the class mask and its ×2, ×4 block modes,
                                           image-label with a colour and the class name per id
      instance_mask/0, 1, 2                likewise (colours left to the viewer)

and rewrites the group's ``ome`` attribute so that its multiscale lists the three levels
(``<primary>``, ``multiscale/1``, ``multiscale/2``). A ``volume`` whose primary is the class
mask (no density saved) carries ``image-label`` itself and lists only the instance mask under
``labels``. Level ``l`` has scale ``2^l × pixel spacing`` and the half-voxel translation of a
block mean. Mask copies cost little on disk (they compress to a few percent).

Everything is computed in Y slabs of 128 rows (a multiple of 4, so the slab-wise pyramid equals
the whole-volume one): memory stays bounded by one slab of the grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from faket_dask.io.ome import (
    NGFF_VERSION,
    downsample_labels,
    downsample_mean,
    image_label_attrs,
    multiscales_entry,
    primary_array,
)

__all__ = ["LEVELS", "MASKS", "SLAB_ROWS", "write_grid_multiscale"]

LEVELS = 3
SLAB_ROWS = 128
MASKS = ("class_mask", "instance_mask")
_AXES = [{"name": a, "type": "space", "unit": "angstrom"} for a in ("z", "y", "x")]


def _level_array(group: Any, path: str, shape: tuple[int, ...], dtype: Any, fill: Any) -> Any:
    chunks = (min(shape[0], 64), min(shape[1], SLAB_ROWS // 4), min(shape[2], 128))
    return group.create_array(
        path,
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        dimension_names=("z", "y", "x"),
        fill_value=fill,
    )


def _pyramid_slabs(src: Any, dst: list[Any], labels: bool) -> None:
    """Fill ``dst`` (levels 1..) from ``src`` (level 0) slab by slab along Y."""
    step = downsample_labels if labels else downsample_mean
    ny = src.shape[1]
    for y0 in range(0, ny, SLAB_ROWS):
        level = np.asarray(src[:, y0 : y0 + SLAB_ROWS])
        row = y0
        for arr in dst:
            level = step(level)
            row //= 2
            arr[:, row : row + level.shape[1]] = level


def _add_levels(group: Any, src: Any, prefix: str, labels: bool) -> list[str]:
    """Create and fill levels 1.. of ``src`` as ``<prefix>1``, ``<prefix>2``; return all paths."""
    shape = tuple(int(s) for s in src.shape)
    paths, dst = [], []
    for lv in range(1, LEVELS):
        shape = tuple(-(-n // 2) for n in shape)
        dst.append(_level_array(group, f"{prefix}{lv}", shape, src.dtype, src.fill_value))
        paths.append(f"{prefix}{lv}")
    _pyramid_slabs(src, dst, labels)
    return paths


def _copy(src: Any, group: Any, path: str) -> Any:
    """A copy of ``src`` (same chunks, shards and fill), written shard row by shard row."""
    arr = group.create_array(
        path,
        shape=src.shape,
        dtype=src.dtype,
        chunks=src.chunks,
        shards=src.shards,
        dimension_names=("z", "y", "x"),
        fill_value=src.fill_value,
    )
    rows = (src.shards or src.chunks)[1]
    for y0 in range(0, src.shape[1], rows):
        arr[:, y0 : y0 + rows] = src[:, y0 : y0 + rows]
    return arr


def write_grid_multiscale(
    group: Any, grid: str, pixel_spacing: float, classes: Mapping[int, str] | None = None
) -> list[str]:
    """Add the pyramid of a grid group's primary array and its masks as OME labels.

    Parameters
    ----------
    group
        An open zarr v3 grid group (``volume`` or ``tomogram``) whose arrays are written.
    grid
        The grid's name (selects the primary array, :func:`faket_dask.io.ome.primary_array`).
    classes
        ``{class id: name}`` for the class mask's ``image-label``.

    Returns
    -------
    The paths of the arrays added (relative to ``group``).
    """
    names = set(group.array_keys())
    primary = primary_array(grid, names)
    if primary is None:
        return []
    scale = [float(pixel_spacing)] * 3
    is_label = primary in MASKS
    paths = [primary, *_add_levels(group, group[primary], "multiscale/", is_label)]
    ome: dict[str, Any] = {
        "version": NGFF_VERSION,
        "multiscales": [multiscales_entry(f"{grid}/{primary}", _AXES, scale, paths)],
    }
    if is_label:
        ome["image-label"] = image_label_attrs(classes if primary == "class_mask" else None)
    added = paths[1:]
    masks = [m for m in MASKS if m in names and m != primary]
    if masks:
        labels = group.create_group("labels")
        labels.attrs["ome"] = {"version": NGFF_VERSION, "labels": masks}
        for m in masks:
            sub = labels.create_group(m)
            _copy(group[m], sub, "0")
            lv = ["0", *_add_levels(sub, sub["0"], "", True)]
            sub.attrs["ome"] = {
                "version": NGFF_VERSION,
                "multiscales": [multiscales_entry(m, _AXES, scale, lv)],
                "image-label": image_label_attrs(
                    classes if m == "class_mask" else None, source="../../"
                ),
            }
            added += [f"labels/{m}/{p}" for p in lv]
    group.attrs["ome"] = ome
    return added
