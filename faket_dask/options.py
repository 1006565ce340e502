"""Typed options of the series verbs (project, noise apply, style).

One object per verb travels from the CLI to either of its two runs: the local one
(:mod:`faket_dask.ops`, one process, the resolved device) or the cluster one
(:mod:`faket_dask.dist.series_graph`, Dask array graphs over Zarr). Paths are MRC files or Zarr
groups; ``var`` names the array inside a Zarr group when it holds several.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["NoiseOptions", "ProjectOptions", "StyleOptions"]


@dataclass(frozen=True)
class ProjectOptions:
    """Project a volume ``(Z, Y, X)`` to noiseless tilts ``(T, Y, W)``.

    ``angles_deg`` (T,) are required; ``detector_width`` defaults to the volume's X and
    ``pixel_spacing`` (Å) to the volume's own. ``rows_per_block``: Y rows per cluster task.
    """

    volume: Path
    output: Path
    angles_deg: np.ndarray
    detector_width: int | None = None
    pixel_spacing: float | None = None
    var: str | None = None
    device: str = "auto"
    overwrite: bool = False
    rows_per_block: int = 64


@dataclass(frozen=True)
class NoiseOptions:
    """Add FakET's tilt-dependent noise to a noiseless series ``(T, H, W)``.

    ``outputs`` maps modalities (``noisy`` or ``baseline``, optionally ``content``) to paths;
    ``angles_deg`` (T,) or ``None`` for the input's own; ``rng`` is ``keyed`` (per-tilt streams,
    the only one a cluster can split) or ``faket`` (the reference's draw).
    """

    noiseless: Path
    model: Path
    outputs: dict[str, Path]
    angles_deg: np.ndarray | None = None
    seed: int = 0
    sample_id: int = 0
    rng: str = "keyed"
    var: str | None = None
    device: str = "auto"
    overwrite: bool = False
    tilts_per_block: int = 8
    chunk: int = 512


@dataclass(frozen=True)
class StyleOptions:
    """FakET's one-step style transfer of CONTENT towards a style reference, from INIT.

    ``weights`` is ``imagenet``, ``random`` (seeded by ``weights_seed``) or a state-dict path;
    ``precision`` fp32, tf32 or bf16; ``batch_size`` tilts per GPU batch; ``vars`` the Zarr
    arrays of ``content``, ``style`` and ``init`` (absent: the only one).
    """

    content: Path
    style: Path
    init: Path
    output: Path
    weights: str = "imagenet"
    weights_seed: int = 0
    precision: str = "fp32"
    batch_size: int = 4
    device: str = "auto"
    overwrite: bool = False
    tilts_per_block: int = 8
    chunk: int = 512
    vars: dict[str, str | None] = field(default_factory=dict)
