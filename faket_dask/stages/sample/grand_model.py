"""Import a grand model instead of building one.

A volume MRC, optional class and instance masks and a particle list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from faket_dask.errors import InputError
from faket_dask.io.mrc import read_mrc_header, read_mrc_rows
from faket_dask.stages.particles import (
    empty_table,
    read_particle_list,
)
from faket_dask.stages.sample.spec import BuildSpec, _check_rows


@dataclass(eq=False)
class GrandModelLayout:
    """An imported grand model: a volume MRC (+ optional masks and particle list), read by slabs."""

    shape: tuple[int, int, int]
    pixel_spacing: float
    classes: dict[int, str]
    particles: pd.DataFrame
    volume_path: str
    class_mask_path: str | None = None
    instance_mask_path: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    spec: BuildSpec | None = None

    @property
    def class_dtype(self) -> np.dtype:
        """uint8, or uint16 when there are more than 255 classes."""
        return np.dtype(np.uint8 if max(self.classes, default=0) < 256 else np.uint16)

    def render(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows ``[y0, y1)`` read from the MRC files (memory-mapped)."""
        nz, ny, nx = self.shape
        y0, y1 = _check_rows(y0, y1, ny)
        density = np.asarray(read_mrc_rows(self.volume_path, y0, y1), dtype=np.float32)
        classes = np.zeros((nz, y1 - y0, nx), dtype=self.class_dtype)
        instances = np.zeros((nz, y1 - y0, nx), dtype=np.uint32)
        if self.class_mask_path:
            classes[...] = np.rint(read_mrc_rows(self.class_mask_path, y0, y1)).astype(
                self.class_dtype
            )
        if self.instance_mask_path:
            instances[...] = np.rint(read_mrc_rows(self.instance_mask_path, y0, y1)).astype(
                np.uint32
            )
        return density, classes, instances

    def summary(self) -> dict[str, Any]:
        """A small JSON-ready description (for store attrs)."""
        return {
            "shape": list(self.shape),
            "pixel_spacing": self.pixel_spacing,
            "classes": {str(k): v for k, v in self.classes.items()},
            "imported": self.volume_path,
            **self.info,
        }


def _mrc_header(path: str) -> tuple[tuple[int, int, int], float | None]:
    if not Path(path).is_file():
        raise InputError(f"grand model file {path} does not exist; check the path")
    shape, voxel = read_mrc_header(path)
    if len(shape) != 3:
        raise InputError(f"{path}: a grand model must be a 3-D (Z, Y, X) volume, got {shape}")
    return (shape[0], shape[1], shape[2]), voxel


def _has_text(path: Path, probe: int = 1 << 16) -> bool:
    """Whether a text file holds anything but whitespace in its first ``probe`` bytes."""
    with open(path, "rb") as f:
        return bool(f.read(probe).strip())


def _pixel_spacing(volume: str, header: float | None, configured: float | None) -> float:
    """The header's voxel size, else the configured one; both given, they agree within 1%."""
    ps = header if header is not None else configured
    if ps is None:
        raise InputError(f"{volume}: the MRC header has no voxel size; set tilts.pixel_spacing")
    if header is not None and configured is not None and abs(header - configured) > 0.01 * header:
        raise InputError(
            f"{volume}: voxel size {header:g} Å differs from tilts.pixel_spacing "
            f"{configured:g} Å; set tilts.pixel_spacing to {header:g}"
        )
    return float(ps)


def _particle_table(
    particles: str | Path,
    pixel_spacing: float,
    shape: tuple[int, int, int],
    class_names: dict[int, str] | None,
) -> pd.DataFrame:
    """The grand model's particle list, its classes matched to the mask labels by name."""
    empty = InputError(
        f"{particles}: the particle list holds no particles; give a list with at least "
        "one particle, or remove sample.grand_model_particles"
    )
    if Path(particles).is_file() and not _has_text(Path(particles)):
        raise empty  # before the parsers, whose errors on empty files say less
    table = read_particle_list(
        particles, pixel_spacing=pixel_spacing, shape=shape, class_names=class_names
    )
    if not len(table):
        raise empty
    if class_names:  # match the list's classes to the mask labels by name
        by_name = {v: k for k, v in class_names.items()}
        matched = [by_name.get(str(n)) for n in table["class_name"]]
        table["class_id"] = [
            m if m is not None else int(c) for m, c in zip(matched, table["class_id"], strict=True)
        ]
    return table


def _class_names(
    table: pd.DataFrame,
    class_names: dict[int, str] | None,
    class_mask: str | Path | None,
    shape: tuple[int, int, int],
) -> dict[int, str]:
    """Mask label -> name: the table's pairs, then ``class_names``, then ``class<N>``."""
    names: dict[int, str] = {}
    if len(table):
        pairs = table[["class_id", "class_name"]].drop_duplicates()
        names.update(
            {int(i): str(n) for i, n in zip(pairs["class_id"], pairs["class_name"], strict=True)}
        )
    names.update(class_names or {})
    if class_mask is not None:
        top = 0
        for y0 in range(0, shape[1], 64):
            top = max(top, int(np.rint(read_mrc_rows(class_mask, y0, y0 + 64).max())))
        for k in range(1, top + 1):
            names.setdefault(k, f"class{k}")
    return dict(sorted(names.items()))


def import_grand_model(
    volume: str | Path,
    *,
    class_mask: str | Path | None = None,
    instance_mask: str | Path | None = None,
    particles: str | Path | None = None,
    pixel_spacing: float | None = None,
    class_names: dict[int, str] | None = None,
    expected_yx: tuple[int, int] | None = None,
) -> GrandModelLayout:
    """Use an existing grand model: a volume MRC, optional class/instance masks, a particle list.

    The pixel spacing comes from the volume's header, else ``pixel_spacing``; when both
    exist they must agree within 1%. Class names come from ``class_names`` (mask label ->
    name; the particle list's rows are matched to them by name), else from the particle
    list's ``class_id``/``class_name`` pairs, else ``class<N>``. Without an instance mask the
    instance mask is all zero (unknown). Particle lists are taken as given: positions must be
    voxels of this volume (SHREC'21's lists, for example, are in its 512^3 frame).
    """
    volume = str(volume)
    shape, header = _mrc_header(volume)
    for path in (class_mask, instance_mask):
        if path is not None:
            mshape, _ = _mrc_header(str(path))
            if mshape != shape:
                raise InputError(f"{path}: mask shape {mshape} differs from the volume's {shape}")
    if expected_yx is not None and tuple(shape[1:]) != tuple(expected_yx):
        raise InputError(
            f"grand model {volume} is (Z, Y, X) = {shape} but the detector (tilts.shape) is "
            f"{tuple(expected_yx)}; set tilts.shape to [{shape[1]}, {shape[2]}]"
        )
    ps = _pixel_spacing(volume, header, pixel_spacing)
    table = empty_table()
    if particles is not None:
        table = _particle_table(particles, ps, shape, class_names)
    names = _class_names(table, class_names, class_mask, shape)
    return GrandModelLayout(
        shape=shape,
        pixel_spacing=ps,
        classes=names,
        particles=table,
        volume_path=volume,
        class_mask_path=None if class_mask is None else str(class_mask),
        instance_mask_path=None if instance_mask is None else str(instance_mask),
    )
