"""Labels drawn over pictures: class-mask outlines in class colours, a legend, a scale bar.

Used by :func:`faket_dask.read.preview.preview`. A tilt's 2-D class map is the projection of
each class's 3-D mask at the tilt's angle (the same projector as the tilts): a detector pixel
belongs to the class whose voxels its ray crosses most. Per-sample misalignment shifts and a
rotated tilt axis (``tilts.misalignment_px``, ``tilts.tilt_axis_deg``) are not applied to the
outlines, so with them the outlines are off by those few pixels or degrees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from faket_dask.stages.projection import project

__all__ = [
    "add_legend",
    "add_scale_bar",
    "class_colors",
    "draw_outlines",
    "nice_length_nm",
    "projected_class_map",
]


def class_colors(classes: Mapping[int, str]) -> dict[int, tuple[float, float, float]]:
    """An RGB colour per class id (matplotlib's tab20, by id; fixed across pictures)."""
    # matplotlib: heavy and optional for the rest of the package, loaded for pictures only
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    colors = {}
    for k in classes:
        r, g, b = cmap((int(k) - 1) % 20)[:3]
        colors[int(k)] = (float(r), float(g), float(b))
    return colors


def projected_class_map(
    class_mask: np.ndarray,
    angles_deg: Sequence[float] | np.ndarray,
    width: int,
    ids: Sequence[int],
) -> np.ndarray:
    """`(T, Y, W)` int class id per detector pixel at each angle (0: no class on the ray).

    ``class_mask`` is the `(Z, Y, X)` volume mask; each pixel takes the class whose voxels
    its ray crosses over the longest path (at least half a voxel).
    """
    mask = np.asarray(class_mask)
    best: torch.Tensor | None = None
    label: torch.Tensor | None = None
    for cid in ids:
        one = torch.from_numpy((mask == int(cid)).astype(np.float32))
        path = -project(one, list(angles_deg), width)
        if best is None or label is None:  # the first class: both are set together
            best = torch.full_like(path, 0.5)
            label = torch.zeros(path.shape, dtype=torch.int64)
        take = path > best
        best = torch.where(take, path, best)
        label[take] = int(cid)
    if label is None:
        return np.zeros((len(angles_deg), mask.shape[1], width), dtype=np.int64)
    return label.numpy()


def draw_outlines(
    ax: Any, labels: np.ndarray, colors: Mapping[int, tuple[float, float, float]]
) -> None:
    """Outline each class's region of a `(H, W)` label map in its colour."""
    for cid, color in colors.items():
        region = (labels == cid).astype(np.float32)
        if region.any():
            ax.contour(region, levels=[0.5], colors=[color], linewidths=0.9)


def add_legend(ax: Any, classes: Mapping[int, str], colors: Mapping[int, Any]) -> None:
    """A legend of class colours and names in ``ax`` (its axes switched off)."""
    # matplotlib: loaded for pictures only
    from matplotlib.patches import Patch

    handles = [Patch(color=colors[k], label=f"{k}: {classes[k]}") for k in sorted(classes)]
    ax.axis("off")
    if handles:
        ax.legend(handles=handles, loc="center", fontsize=7, frameon=False, title="classes")


def nice_length_nm(width_nm: float) -> float:
    """A round bar length (1, 2 or 5 × 10^k nm) of about a quarter of ``width_nm``."""
    target = max(width_nm / 4.0, 1e-3)
    k = 10.0 ** np.floor(np.log10(target))
    return float(max(m * k for m in (1.0, 2.0, 5.0) if m * k <= target))


def add_scale_bar(ax: Any, width_px: int, height_px: int, pixel_spacing_a: float) -> float:
    """A white scale bar with its length in nm at the lower left of an image axis; the length."""
    length_nm = nice_length_nm(width_px * pixel_spacing_a / 10.0)
    px = length_nm * 10.0 / pixel_spacing_a
    x0, y0 = 0.05 * width_px, 0.92 * height_px
    ax.plot([x0, x0 + px], [y0, y0], color="white", lw=2.5, solid_capstyle="butt")
    ax.text(x0, y0 - 0.03 * height_px, f"{length_nm:g} nm", color="white", fontsize=7)
    return length_nm
