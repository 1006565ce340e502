"""Render a layout by Y slabs: density, class mask and instance mask, never the whole volume."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from faket_dask.stages.sample.grand_model import GrandModelLayout
from faket_dask.stages.sample.layout import SampleLayout, build_layout
from faket_dask.stages.sample.spec import BuildSpec

if TYPE_CHECKING:
    import torch



#: A slab's arrays (density + masks) are kept under about this many bytes by default.
SLAB_BYTES = 256 * 1024**2


class Sample(NamedTuple):
    """A whole rendered sample (small volumes only; large ones go slab by slab)."""

    density: np.ndarray
    class_mask: np.ndarray
    instance_mask: np.ndarray
    particles: pd.DataFrame
    layout: SampleLayout | GrandModelLayout


def render_slab(
    layout: SampleLayout | GrandModelLayout,
    y0: int,
    y1: int,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray | torch.Tensor, np.ndarray, np.ndarray]:
    """Render rows ``[y0, y1)`` of a sample: ``(density, class_mask, instance_mask)``.

    Shapes are ``(Z, y1 - y0, X)``. The masks are NumPy arrays (class: uint8/uint16,
    instance: uint32). The density is float32 NumPy when ``device`` is None, else a
    ``torch.Tensor`` on ``device`` (ready for :func:`faket_dask.stages.projection.project_slab`).
    Slabs of any size concatenate to the same bytes as :func:`build_sample`.
    """
    density, classes, instances = layout.render(y0, y1)
    if device is None:
        return density, classes, instances
    import torch

    return torch.from_numpy(density).to(device), classes, instances


def default_slab_size(shape: tuple[int, int, int], budget: int = SLAB_BYTES) -> int:
    """Y rows per slab keeping density + masks (about 9 bytes a voxel) under ``budget``."""
    nz, ny, nx = shape
    return int(max(1, min(ny, budget // max(1, 9 * nz * nx))))


def iter_slabs(
    layout: SampleLayout | GrandModelLayout,
    slab_size: int | None = None,
    device: str | torch.device | None = None,
) -> Iterator[tuple[int, int, Any, np.ndarray, np.ndarray]]:
    """Yield ``(y0, y1, density, class_mask, instance_mask)`` for consecutive slabs."""
    ny = layout.shape[1]
    if slab_size is None:
        cfg_size = layout.spec.sample.slab_size if layout.spec is not None else None
        slab_size = cfg_size or default_slab_size(layout.shape)
    for y0 in range(0, ny, int(slab_size)):
        y1 = min(ny, y0 + int(slab_size))
        yield (y0, y1, *render_slab(layout, y0, y1, device))


def build_sample(
    spec: BuildSpec | SampleLayout | GrandModelLayout, slab_size: int | None = None
) -> Sample:
    """Draw and render a whole sample: the layout, then every slab, concatenated along Y.

    For volumes that fit in memory (tests, demos). Large samples should use
    :func:`build_layout` and :func:`render_slab` (or :func:`iter_slabs`) instead.
    """
    layout = build_layout(spec) if isinstance(spec, BuildSpec) else spec
    nz, ny, nx = layout.shape
    density = np.empty((nz, ny, nx), dtype=np.float32)
    classes = np.empty((nz, ny, nx), dtype=layout.class_dtype)
    instances = np.empty((nz, ny, nx), dtype=np.uint32)
    for y0, y1, d, c, i in iter_slabs(layout, slab_size):
        density[:, y0:y1] = d
        classes[:, y0:y1] = c
        instances[:, y0:y1] = i
    return Sample(density, classes, instances, layout.particles, layout)
