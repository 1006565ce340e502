"""OME-Zarr 0.5 (NGFF) image metadata for the store's grid groups, so that napari opens them.

Layout decision
---------------
A grid group (``tilts``, ``volume``, ``tomogram``) holds several sibling ``(tilt|z, y, x)``
arrays, one per modality, plus 1-D coordinate arrays, because that is what
``xarray.open_zarr(store, group=...)`` reads as one dataset. OME-Zarr's ``multiscales`` lists
*resolution levels of one image*, not sibling images, so the group's ``ome`` attributes describe
one **primary** array (a single-level multiscale whose only dataset is that array):

* ``tilts``: ``styled`` if present, else the first of ``noisy``, ``baseline``, ``content``,
  ``noiseless``; axes ``tilt`` (custom type ``tilt``, index spacing 1) and ``y``, ``x`` (space,
  Å);
* ``tomogram``: the ``tomogram`` reconstruction; axes ``z``, ``y``, ``x`` (space, Å);
* ``volume``: ``density`` if saved, else ``class_mask``.

For ``volume`` and ``tomogram``, :mod:`faket_dask.io.multiscale` then adds the primary's ×2 and
×4 levels (``multiscale/1``, ``multiscale/2``) and the masks as OME labels (``labels/...``), and
lists the three levels in the group's multiscale. The pyramid and label helpers
(:func:`pyramid`, :func:`image_label_attrs`, :func:`multiscales_entry`) also serve the NGFF 0.4
export.

OME readers open the primary array and ignore the siblings; xarray ignores the ``ome`` attribute
(and the subgroups) and sees every modality. The primary array opens with the napari-ome-zarr
reader plugin, ``napari --plugin napari-ome-zarr store.zarr/samples/000000/tilts``; another
modality opens from Python with
``napari.Viewer().add_image(zarr.open_array(store, path=".../tilts/noisy"))`` (napari >= 0.6
has no ``view_image``). (Per-modality OME
subgroups would have broken the one-dataset-per-grid xarray layout; several ``multiscales``
entries in one group are schema-valid, but readers show only the first, so they would promise
what no viewer delivers.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "LABEL_PALETTE",
    "NGFF_VERSION",
    "TILT_PREFERENCE",
    "downsample_labels",
    "downsample_mean",
    "grid_ome_attrs",
    "image_attrs",
    "image_label_attrs",
    "label_colour",
    "multiscales_attrs",
    "multiscales_entry",
    "primary_array",
    "pyramid",
    "validate_ome",
]

NGFF_VERSION = "0.5"
TILT_PREFERENCE = ("styled", "noisy", "baseline", "content", "noiseless")
_GRID_PREFERENCE: dict[str, tuple[str, ...]] = {
    "tilts": TILT_PREFERENCE,
    "tomogram": ("tomogram",),
    "volume": ("density", "class_mask"),
}
_SPACE_UNITS = {"angstrom", "nanometer", "micrometer", "millimeter", "meter", "picometer"}


def primary_array(grid: str, names: Iterable[str]) -> str | None:
    """The array a grid group's OME metadata describes, or ``None`` when none fits."""
    present = set(names)
    for name in _GRID_PREFERENCE.get(grid, ()):
        if name in present:
            return name
    return None


def multiscales_attrs(
    path: str,
    axes: Sequence[Mapping[str, str]],
    scale: Sequence[float],
    name: str,
) -> dict[str, Any]:
    """Group attributes ``{"ome": {...}}`` of a single-level OME-Zarr 0.5 image.

    Parameters
    ----------
    path
        The array (inside the group) that is the image.
    axes
        One ``{"name", "type"[, "unit"]}`` per array dimension, in order.
    scale
        Physical size of one step along each axis (Å for space axes).
    name
        The image's name (shown by viewers as the layer name).
    """
    if len(axes) != len(scale):
        raise ValueError(f"{len(axes)} axes but {len(scale)} scale factors")
    return {
        "ome": {
            "version": NGFF_VERSION,
            "multiscales": [
                {
                    "name": name,
                    "axes": [dict(a) for a in axes],
                    "datasets": [
                        {
                            "path": path,
                            "coordinateTransformations": [
                                {"type": "scale", "scale": [float(s) for s in scale]}
                            ],
                        }
                    ],
                }
            ],
        }
    }


def image_attrs(
    path: str, dims: Sequence[str], pixel_spacing: float | None, name: str | None = None
) -> dict[str, Any]:
    """OME attrs of a group's one ``tilt``/``z``, ``y``, ``x`` image array ``path``.

    Space axes are in Å with the pixel spacing as their step; a ``tilt`` axis steps by index
    (the angles are the ``tilt_angle`` coordinate, not necessarily evenly spaced). ``{}`` when
    the pixel spacing is unknown: OME needs a physical scale.
    """
    if pixel_spacing is None:
        return {}
    ps = float(pixel_spacing)
    axes = [
        {"name": d, "type": "tilt"}
        if d == "tilt"
        else {"name": d, "type": "space", "unit": "angstrom"}
        for d in dims
    ]
    scale = [1.0 if d == "tilt" else ps for d in dims]
    return multiscales_attrs(path, axes, scale, name or path)


def grid_ome_attrs(grid: str, names: Iterable[str], pixel_spacing: float) -> dict[str, Any]:
    """OME attributes of a grid group (``tilts``, ``volume``, ``tomogram``), or ``{}``.

    They describe the grid's primary array (:func:`primary_array`).
    """
    primary = primary_array(grid, names)
    if primary is None:
        return {}
    dims = ("tilt", "y", "x") if grid == "tilts" else ("z", "y", "x")
    return image_attrs(primary, dims, pixel_spacing, f"{grid}/{primary}")


def validate_ome(attrs: Mapping[str, Any], arrays: Mapping[str, Any] | None = None) -> list[str]:
    """Problems with a group's OME-Zarr 0.5 image metadata (empty when it is valid).

    Checks what the NGFF 0.5 schema checks (version, multiscales, 2-5 unique axes with 2-3 space
    axes, one scale per dataset) and what it states but cannot check: the scale's length equals
    the number of axes, space axes carry a known length unit, at most one custom axis type and,
    given ``arrays`` (name -> zarr array), that each dataset path exists with one dimension per
    axis and ``dimension_names`` equal to the axis names.
    """
    problems: list[str] = []
    ome = attrs.get("ome")
    if not isinstance(ome, Mapping):
        return ["no 'ome' attribute"]
    if ome.get("version") != NGFF_VERSION:
        problems.append(f"ome.version is {ome.get('version')!r}, expected {NGFF_VERSION!r}")
    ms = ome.get("multiscales")
    if not isinstance(ms, list) or not ms:
        return [*problems, "ome.multiscales must be a non-empty list"]
    for i, m in enumerate(ms):
        where = f"multiscales[{i}]"
        axes = m.get("axes") or []
        names = [a.get("name") for a in axes]
        types = [a.get("type") for a in axes]
        if not 2 <= len(axes) <= 5:
            problems.append(f"{where}: {len(axes)} axes, expected 2 to 5")
        if len(set(names)) != len(names):
            problems.append(f"{where}: axis names are not unique: {names}")
        n_space = types.count("space")
        if not 2 <= n_space <= 3:
            problems.append(f"{where}: {n_space} space axes, expected 2 or 3")
        custom = [t for t in types if t not in ("space", "time", "channel", None)]
        if len(custom) > 1:
            problems.append(f"{where}: more than one custom axis type: {custom}")
        for a in axes:
            if a.get("type") == "space" and a.get("unit", "angstrom") not in _SPACE_UNITS:
                problems.append(f"{where}: axis {a.get('name')} has unit {a.get('unit')!r}")
        if n_space and types[-n_space:] != ["space"] * n_space:
            problems.append(f"{where}: space axes must come last: {types}")
        datasets = m.get("datasets") or []
        if not datasets:
            problems.append(f"{where}: no datasets")
        for d in datasets:
            path = d.get("path")
            scales = [t for t in d.get("coordinateTransformations", []) if t.get("type") == "scale"]
            if len(scales) != 1:
                problems.append(f"{where}: dataset {path!r} needs exactly one scale transform")
            elif len(scales[0].get("scale", [])) != len(axes):
                problems.append(f"{where}: dataset {path!r} scale length != number of axes")
            if arrays is None:
                continue
            if path not in arrays:
                problems.append(f"{where}: dataset path {path!r} is not an array of the group")
                continue
            arr = arrays[path]
            if len(arr.shape) != len(axes):
                problems.append(f"{where}: array {path!r} has {len(arr.shape)} dimensions")
            dims = getattr(arr.metadata, "dimension_names", None)
            if dims is not None and list(dims) != names:
                problems.append(f"{where}: array {path!r} dimension_names {list(dims)} != {names}")
    return problems


# --------------------------------------------------------------------------- pyramids, labels

#: Colours of label values 1, 2, ... (RGBA; matplotlib's tab10), cycled.
LABEL_PALETTE: tuple[tuple[int, int, int, int], ...] = (
    (31, 119, 180, 255),
    (255, 127, 14, 255),
    (44, 160, 44, 255),
    (214, 39, 40, 255),
    (148, 103, 189, 255),
    (140, 86, 75, 255),
    (227, 119, 194, 255),
    (127, 127, 127, 255),
    (188, 189, 34, 255),
    (23, 190, 207, 255),
)


def label_colour(value: int) -> tuple[int, int, int, int]:
    """The RGBA colour of label ``value`` (>= 1) in :data:`LABEL_PALETTE`."""
    return LABEL_PALETTE[(int(value) - 1) % len(LABEL_PALETTE)]


def _corners(data: np.ndarray) -> list[np.ndarray]:
    """The 8 strided views ``data[i::2, j::2, k::2]`` of 2x2x2 blocks (odd sizes: edge-padded)."""
    pad = [(0, n % 2) for n in data.shape]
    arr = np.pad(data, pad, mode="edge") if any(p for _, p in pad) else data
    return [arr[i::2, j::2, k::2] for i in (0, 1) for j in (0, 1) for k in (0, 1)]


def downsample_mean(data: np.ndarray) -> np.ndarray:
    """Halve a ``(d, h, w)`` image by the mean of 2x2x2 blocks (odd sizes: edge-padded)."""
    corners = _corners(np.asarray(data))
    total = corners[0].astype(np.float64)
    for c in corners[1:]:
        total += c
    return (total / 8.0).astype(data.dtype)


def downsample_labels(data: np.ndarray) -> np.ndarray:
    """Halve a ``(d, h, w)`` label image by the most frequent label of each 2x2x2 block.

    Label-preserving: every output value is one of the block's labels (never an average);
    ties go to the largest label, so a particle wins a tie against background (as
    :func:`faket_dask.stages.reconstruction.bin_volume_labels` bins). Odd sizes are
    edge-padded. Uniform blocks (most of a volume) cost a min and a max; only blocks on an
    object's edge are counted.
    """
    corners = _corners(np.asarray(data))
    lo, hi = corners[0].copy(), corners[0].copy()
    for c in corners[1:]:
        np.minimum(lo, c, out=lo)
        np.maximum(hi, c, out=hi)
    mixed = np.nonzero(lo != hi)
    if mixed[0].size:
        blk = np.sort(np.stack([c[mixed] for c in corners], axis=1), axis=1)  # (n, 8)
        counts = (blk[:, :, None] == blk[:, None, :]).sum(axis=-1)
        best = 7 - np.argmax(counts[:, ::-1], axis=-1)  # the last (largest) of the modes
        lo[mixed] = blk[np.arange(blk.shape[0]), best]
    return lo


def pyramid(data: np.ndarray, levels: int = 3, *, labels: bool = False) -> list[np.ndarray]:
    """``levels`` resolution levels ×1, ×2, ×4... of a 3-D image (``labels``: mode, else mean)."""
    out = [np.asarray(data)]
    step = downsample_labels if labels else downsample_mean
    while len(out) < levels and min(out[-1].shape) >= 2:
        out.append(step(out[-1]))
    return out


def multiscales_entry(
    name: str,
    axes: Sequence[Mapping[str, str]],
    scale: Sequence[float],
    paths: Sequence[str],
    version: str | None = None,
) -> dict[str, Any]:
    """One ``multiscales`` entry for levels ``paths`` (level ``l`` is ×2^l on the space axes).

    Level ``l`` has scale ``scale × 2^l`` on space axes and a translation of
    ``(2^l - 1) / 2 × scale``: its first voxel is the mean of level 0's first ``2^l`` voxels.
    ``version`` is set for NGFF 0.4 (0.5 puts it in the ``ome`` object).
    """
    space = [a.get("type") == "space" for a in axes]
    datasets = []
    for level, path in enumerate(paths):
        f = 2**level
        sc = [float(s) * (f if sp else 1) for s, sp in zip(scale, space, strict=True)]
        tr = [float(s) * (f - 1) / 2 if sp else 0.0 for s, sp in zip(scale, space, strict=True)]
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": sc}]
        if level:
            transforms.append({"type": "translation", "translation": tr})
        datasets.append({"path": path, "coordinateTransformations": transforms})
    entry: dict[str, Any] = {"name": name, "axes": [dict(a) for a in axes], "datasets": datasets}
    if version is not None:
        entry = {"version": version, **entry}
    return entry


def image_label_attrs(
    classes: Mapping[int, str] | None, version: str | None = None, source: str | None = None
) -> dict[str, Any]:
    """The ``image-label`` object of a label image: a colour and a class name per value.

    ``classes`` maps label values (>= 1) to names (``None``: colours only, e.g. instance ids,
    which viewers colour themselves). ``source`` is the relative path of the labelled image.
    """
    out: dict[str, Any] = {}
    if version is not None:
        out["version"] = version
    if classes:
        values = sorted(int(k) for k in classes)
        out["colors"] = [{"label-value": v, "rgba": list(label_colour(v))} for v in values]
        out["properties"] = [{"label-value": v, "class": str(classes[v])} for v in values]
    if source is not None:
        out["source"] = {"image": source}
    return out
