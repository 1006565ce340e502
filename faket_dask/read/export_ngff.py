"""Export samples as OME-Zarr NGFF 0.4 on Zarr v2, the format of the CryoET Data Portal.

The dataset store is Zarr v3 with OME-Zarr 0.5 metadata; the data portal's ingestion and
copick 1.x (which pins ``zarr < 3``) read NGFF 0.4 on Zarr v2, so this export writes that::

    OUTPUT/sample_000000/
      tomogram.zarr/            the tomogram: levels 0, 1, 2 (×1, ×2, ×4; 2x2x2 means)
        labels/class_mask/      its class mask: levels 0, 1, 2 (2x2x2 modes), image-label
        labels/instance_mask/   its instance mask, likewise (when the sample has one)
      volume.zarr/              the sample volume: the density (``output.save_density``) with
        labels/...              class and instance masks as labels; without a density, the
                                class mask itself as a label image (``image-label`` at the top)

Arrays are ``(z, y, x)`` with chunks of up to 256³ and ``/``-separated chunk keys (as the portal
writes them); the scale is the pixel spacing in Å (×2^l at level l, with the half-voxel
translation of a block mean). Labels carry a colour and the class name per value
(``image-label`` ``colors`` and ``properties``), so napari opens them as Labels layers.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from faket_dask.errors import InputError
from faket_dask.io.ome import image_label_attrs, multiscales_entry, pyramid
from faket_dask.read.access import open_dataset

__all__ = [
    "CHUNK",
    "LEVELS",
    "NGFF04",
    "class_names",
    "export_ngff04",
    "has_grid",
    "prepare_output",
    "samples_to_export",
    "write_ngff04_image",
]

NGFF04 = "0.4"
LEVELS = 3
CHUNK = 256
_AXES = [{"name": a, "type": "space", "unit": "angstrom"} for a in ("z", "y", "x")]


def _write_levels(group: Any, levels: Sequence[np.ndarray]) -> None:
    for level, data in enumerate(levels):
        arr = group.create_array(
            str(level),
            shape=data.shape,
            dtype=data.dtype,
            chunks=tuple(min(s, CHUNK) for s in data.shape),
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )
        arr[...] = data


def write_ngff04_image(
    path: str | os.PathLike[str],
    data: np.ndarray,
    voxel_size: float,
    name: str,
    *,
    labels: Mapping[str, tuple[np.ndarray, Mapping[int, str] | None]] | None = None,
    label_image: Mapping[int, str] | None = None,
    levels: int = LEVELS,
) -> Path:
    """Write a ``(z, y, x)`` image as an NGFF 0.4 multiscale group on Zarr v2.

    Parameters
    ----------
    data
        Level 0; levels 1.. are 2x2x2 block means (modes when ``label_image`` is given).
    voxel_size
        Å per voxel at level 0.
    labels
        ``name -> (mask, {value: class name} or None)``: label images of the same shape,
        written under ``labels/<name>`` with their own mode pyramid and ``image-label``.
    label_image
        When not ``None``, ``data`` is itself a label image with these class names.
    """
    path = Path(path)
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    is_label = label_image is not None
    lv = pyramid(data, levels, labels=is_label)
    _write_levels(group, lv)
    paths = [str(i) for i in range(len(lv))]
    attrs: dict[str, Any] = {
        "multiscales": [multiscales_entry(name, _AXES, [voxel_size] * 3, paths, NGFF04)]
    }
    if is_label:
        attrs["image-label"] = image_label_attrs(label_image, NGFF04)
    group.attrs.update(attrs)
    if labels:
        lab = group.create_group("labels")
        lab.attrs["labels"] = list(labels)
        for key, (mask, classes) in labels.items():
            sub = lab.create_group(key)
            mlv = pyramid(np.asarray(mask), levels, labels=True)
            _write_levels(sub, mlv)
            mpaths = [str(i) for i in range(len(mlv))]
            sub.attrs.update(
                {
                    "multiscales": [
                        multiscales_entry(key, _AXES, [voxel_size] * 3, mpaths, NGFF04)
                    ],
                    "image-label": image_label_attrs(classes, NGFF04, source="../../"),
                }
            )
    return path


def samples_to_export(
    store: str | os.PathLike[str], sample_ids: Sequence[int] | None, *, allow_none: bool = False
) -> tuple[Any, list[int]]:
    """The open dataset and the samples an export writes: those given, or every complete one.

    Raises
    ------
    InputError
        A given sample is not complete in the store, or (unless ``allow_none``) there is none.
    """
    ds = open_dataset(store)
    ids = list(ds.ids if sample_ids is None else sample_ids)
    if not ids and not allow_none:
        raise InputError(f"{store} has no complete samples to export")
    for sid in ids:
        ds.check_id(sid)
    return ds, ids


def has_grid(ds: Any, sample_id: int, grid: str) -> bool:
    """Whether a sample of an open dataset has the group ``grid`` (``volume``, ``tomogram``)."""
    return (Path(ds.path) / "samples" / f"{int(sample_id):06d}" / grid / "zarr.json").is_file()


def _grid_image(ds: Any, sample_id: int, grid: str) -> tuple[str, np.ndarray, dict] | None:
    """The grid's image array (name, data) and its masks; ``None`` when the grid is absent."""
    if not has_grid(ds, sample_id, grid):
        return None
    g = ds.sample(sample_id, grid)
    masks = {k: np.asarray(g[k].values) for k in ("class_mask", "instance_mask") if k in g}
    image = "tomogram" if grid == "tomogram" else ("density" if "density" in g else None)
    return (image or "", np.asarray(g[image].values) if image else np.empty(0), masks)


def export_ngff04(
    store: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    sample_ids: Sequence[int] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write complete samples' tomograms and volumes as NGFF 0.4 / Zarr v2 (see module doc).

    Returns ``{"samples": n, "images": [paths]}``.
    """
    ds, ids = samples_to_export(store, sample_ids, allow_none=True)
    out = prepare_output(output, overwrite)
    written: list[Path] = []
    for sid in ids:
        classes = class_names(ds, sid)
        for grid in ("tomogram", "volume"):
            got = _grid_image(ds, sid, grid)
            if got is None:
                continue
            image, data, masks = got
            ps = float(ds.sample(sid, grid).attrs["pixel_spacing"])
            labels = {k: (m, classes if k == "class_mask" else None) for k, m in masks.items()}
            target = out / f"sample_{int(sid):06d}" / f"{grid}.zarr"
            target.parent.mkdir(parents=True, exist_ok=True)
            name = f"sample_{int(sid):06d} {grid}"
            if image:
                written.append(write_ngff04_image(target, data, ps, name, labels=labels))
            elif "class_mask" in masks:
                written.append(
                    write_ngff04_image(target, masks["class_mask"], ps, name, label_image=classes)
                )
    return {"samples": len(ids), "images": written}


def class_names(ds: Any, sample_id: int) -> dict[int, str]:
    """``{class id: name}`` of a sample (the volume's ``classes``; empty without a volume)."""
    if not has_grid(ds, sample_id, "volume"):
        return {}
    raw = ds.sample(sample_id, "volume").attrs.get("classes") or {}
    return {int(k): str(v) for k, v in raw.items()}


def prepare_output(output: str | os.PathLike[str], overwrite: bool) -> Path:
    """An empty output folder (an existing non-empty one only with ``overwrite``)."""
    out = Path(output).resolve()
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"{out} exists and is not empty; pass --overwrite or choose another")
        shutil.rmtree(out)
    if not out.parent.is_dir():
        raise InputError(f"output folder {out.parent} does not exist; create it first")
    out.mkdir(parents=True, exist_ok=True)
    return out
