"""A per-sample preview picture of a store (matplotlib, Agg), and the drawing helpers.

:func:`preview`: NOISELESS, NOISY (and BASELINE, when stored), FAKET (``styled``) and the style
reference side by side at three tilts (lowest, nearest zero, highest angle), with the radially
averaged power spectrum of each at that tilt. The dataset report is :mod:`faket_dask.read.report`.

Numerics live in :mod:`faket_dask.read.metrics`; this module only reads the store and draws.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faket_dask.config import config_from_dict, union_angles
from faket_dask.demo import DEMO_REFERENCE_SEED
from faket_dask.errors import InputError
from faket_dask.io import read_tilt_series
from faket_dask.io import store as st
from faket_dask.read.access import open_dataset
from faket_dask.read.labels import (
    add_legend,
    add_scale_bar,
    class_colors,
    draw_outlines,
    projected_class_map,
)
from faket_dask.read.metrics import radial_power_spectrum
from faket_dask.stages.reference_synth import demo_reference

__all__ = [
    "LABELS",
    "PREVIEW_MODALITIES",
    "REALISM_MODALITIES",
    "crop_to",
    "load_reference",
    "match_reference",
    "preview",
    "pyplot",
    "save_figure",
    "show",
    "tilt_indices",
]

PREVIEW_MODALITIES = ("noiseless", "noisy", "baseline", "styled")
REALISM_MODALITIES = ("noisy", "baseline", "styled")
LABELS = {
    "noiseless": "NOISELESS",
    "noisy": "NOISY",
    "baseline": "BASELINE",
    "content": "CONTENT",
    "styled": "FAKET",
}


def pyplot() -> Any:
    """Matplotlib's pyplot on the Agg backend."""
    # matplotlib: heavy and optional for the rest of the package, loaded for pictures only
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def tilt_indices(angles_deg: Sequence[float] | np.ndarray) -> list[int]:
    """Indices of the lowest, nearest-zero and highest tilt angle (duplicates kept in order)."""
    a = np.asarray(angles_deg, dtype=np.float64)
    return [int(a.argmin()), int(np.abs(a).argmin()), int(a.argmax())]


def load_reference(
    store: str | os.PathLike[str], sample_id: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """The style reference that styled a sample: ``(data (T, H, W), angles (T,) deg or None)``.

    Read from the path recorded in the store; the built-in demo reference is made again
    (deterministically) when its copy is gone.
    """
    attrs = st.read_store_attrs(store)
    refs = attrs.get("style_references") or []
    sample = st.read_sample_attrs(store, sample_id) or {}
    idx = int((sample.get("drew") or {}).get("style_reference") or 0)
    if not refs:
        raise InputError(f"{store} records no style reference (style transfer was off)")
    rec = refs[min(idx, len(refs) - 1)]
    path = Path(str(rec.get("path", "")))
    if path.exists():
        series = read_tilt_series(path)
    elif rec.get("spec") == "demo":
        cfg = config_from_dict(attrs["config"], source=f"store {store}")
        h, w = cfg.tilts.shape
        series = demo_reference(
            (int(h), int(w)), union_angles(cfg), cfg.tilts.pixel_spacing, DEMO_REFERENCE_SEED
        )
    else:
        raise InputError(f"style reference {path} (recorded in {store}) is gone; restore it")
    data = np.asarray(series.data, dtype=np.float32)
    angles = None if series.angles_deg is None else np.asarray(series.angles_deg, np.float64)
    return data, angles


def match_reference(
    ref: np.ndarray, ref_angles: np.ndarray | None, angles: np.ndarray
) -> np.ndarray:
    """The reference tilt used for each sample tilt: the nearest angle, else by index."""
    if ref_angles is not None and ref_angles.size == ref.shape[0]:
        idx = np.abs(ref_angles[None, :] - angles[:, None]).argmin(axis=1)
    else:
        idx = np.round(np.linspace(0, ref.shape[0] - 1, angles.size)).astype(int)
    return ref[idx]


def crop_to(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The centre `(..., h, w)` crop of ``a`` to ``shape``."""
    h, w = a.shape[-2:]
    y0, x0 = (h - shape[0]) // 2, (w - shape[1]) // 2
    return a[..., y0 : y0 + shape[0], x0 : x0 + shape[1]]


def show(ax: Any, img: np.ndarray, title: str | None = None) -> None:
    """An image `(H, W)` in gray between its 1st and 99th percentiles, no ticks."""
    lo, hi = np.nanpercentile(img, [1, 99])
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def _unit(img: np.ndarray) -> np.ndarray:
    x = np.asarray(img, dtype=np.float64)
    s = x.std()
    return (x - x.mean()) / (s if s > 0 else 1.0)


def save_figure(fig: Any, output: Path, dpi: int) -> None:
    """Save (parent folders made) and close the figure."""
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=dpi, metadata={"Software": "faket-dask"})
    pyplot().close(fig)


def _sample_labels(ds: Any, sample_id: int) -> tuple[np.ndarray | None, dict[int, str]]:
    """The sample's `(Z, Y, X)` class mask and ``{id: name}`` (``None`` if not stored)."""
    try:
        vol = ds.sample(sample_id, "volume")
    except InputError:
        return None, {}
    if "class_mask" not in vol.data_vars:
        return None, {}
    classes = {int(k): str(v) for k, v in (vol.attrs.get("classes") or {}).items()}
    return np.asarray(vol["class_mask"].values), classes


def _tomogram_panels(
    axes: Sequence[Any], ds: Any, sample_id: int, colors: dict[int, Any], ps: float
) -> None:
    """The central tomogram slice with its class mask outlined, and the mask itself."""
    try:
        tomo = ds.sample(sample_id, "tomogram")
    except InputError:
        tomo = None
    if tomo is None or "tomogram" not in tomo.data_vars:
        for ax in axes:
            ax.axis("off")
        axes[0].set_title("no tomogram stored", fontsize=9)
        return
    z = tomo.sizes["z"] // 2
    img = np.asarray(tomo["tomogram"].values[z], dtype=np.float32)
    show(axes[0], img, f"tomogram, slice z={z}")
    tps = float(tomo.attrs.get("pixel_spacing") or ps)
    add_scale_bar(axes[0], img.shape[1], img.shape[0], tps)
    if "class_mask" in tomo.data_vars:
        mask = np.asarray(tomo["class_mask"].values[z])
        draw_outlines(axes[0], mask, colors)
        rgb = np.zeros((*mask.shape, 3))
        for cid, color in colors.items():
            rgb[mask == cid] = color
        axes[1].imshow(rgb, interpolation="nearest")
        axes[1].set_title("its class mask", fontsize=9)
    axes[1].set_xticks([])
    axes[1].set_yticks([])


def _spectra(ax: Any, images: dict[str, np.ndarray], r: int, ps: float, colors: list) -> None:
    """Radially averaged power spectra of row ``r`` of each image stack (unit variance)."""
    for c, name in enumerate(images):
        freq, power = radial_power_spectrum(_unit(images[name][r]))
        label = LABELS.get(name, "reference")
        ax.semilogy(freq[1:] / ps, power[1:], lw=1.2, color=colors[c % len(colors)], label=label)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("spatial frequency (1/Å)", fontsize=7)


def preview(
    store: str | os.PathLike[str],
    sample_id: int,
    output: str | os.PathLike[str],
    *,
    dpi: int = 80,
) -> Path:
    """Write a PNG of one sample's modalities, labels and style reference at three tilts.

    Columns: NOISELESS, NOISY, (BASELINE,) FAKET, the style reference's matching tilt, FAKET
    with the class mask outlined in class colours (:mod:`faket_dask.read.labels`; a scale bar
    in nm), the radially averaged power spectra (each image standardised to unit variance; x
    in 1/Å), then the central tomogram slice with its class mask and the class legend. Rows:
    the lowest, nearest-zero and highest tilt (-60°/0°/+60° for FakET's range).
    """
    ds = open_dataset(store)
    tilts = ds.sample(sample_id, "tilts")
    mods = [m for m in PREVIEW_MODALITIES if m in tilts.data_vars]
    if not mods:
        raise InputError(f"sample {sample_id} stores no tilt modality to preview")
    angles = np.asarray(tilts.tilt_angle.values, dtype=np.float64)
    rows = tilt_indices(angles)
    ps = float(tilts.attrs.get("pixel_spacing") or 1.0)
    images = {m: np.asarray(tilts[m].values[rows], dtype=np.float32) for m in mods}
    with contextlib.suppress(InputError):
        ref, ref_angles = load_reference(store, sample_id)
        images["reference"] = crop_to(
            match_reference(ref, ref_angles, angles[rows]), images[mods[0]].shape[1:]
        )
    mask, classes = _sample_labels(ds, sample_id)
    colors = class_colors(classes)
    h, w = images[mods[0]].shape[1:]
    labels = None
    if mask is not None:
        labels = projected_class_map(mask, angles[rows], w, sorted(classes))
    plt = pyplot()
    ncol = len(images) + 3
    fig, axes = plt.subplots(3, ncol, figsize=(2.1 * ncol + 0.8, 6.6), squeeze=False)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    top = mods[-1]
    for r, t in enumerate(rows):
        for c, name in enumerate(images):
            title = LABELS.get(name, "style reference") if r == 0 else None
            show(axes[r, c], images[name][r], title)
        axes[r, 0].set_ylabel(f"tilt {angles[t]:+.0f}°", fontsize=9)
        lab = axes[r, len(images)]
        show(lab, images[top][r], f"{LABELS[top]} + class mask" if r == 0 else None)
        add_scale_bar(lab, w, h, ps)
        if labels is not None:
            draw_outlines(lab, labels[r], colors)
        _spectra(axes[r, len(images) + 1], images, r, ps, cycle)
    axes[0, len(images) + 1].set_title("radial power spectra", fontsize=9)
    axes[0, len(images) + 1].legend(fontsize=6, frameon=False)
    _tomogram_panels(axes[:2, -1], ds, sample_id, colors, ps)
    add_legend(axes[2, -1], classes, colors)
    weights = (ds.attrs.get("weights") or {}).get("name")
    fig.suptitle(
        f"{Path(store).name}  sample {sample_id}  ({len(angles)} tilts, {ps:g} Å/px"
        + (f", weights: {weights}" if weights else "")
        + ")",
        fontsize=10,
    )
    fig.tight_layout()
    out = Path(output)
    save_figure(fig, out, dpi)
    return out
