"""What a sample is a function of: the spec and its keyed random streams."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faket_dask.config import SampleConfig
from faket_dask.errors import InputError

if TYPE_CHECKING:
    from faket_dask.config import SimulationConfig


MEMBRANE = "membrane"  # the table's kind of a vesicle or planar membrane
FIDUCIAL = "fiducial"  # the table's kind of a gold bead


def keyed_rng(*keys: object) -> np.random.Generator:
    """A generator keyed by SHA-256 of the JSON of ``keys`` (e.g. seed, sample id, purpose)."""
    text = json.dumps(list(keys), separators=(",", ":"), default=str)
    digest = hashlib.sha256(text.encode()).digest()
    return np.random.default_rng(np.random.SeedSequence(int.from_bytes(digest[:16], "little")))


@dataclass(frozen=True)
class BuildSpec:
    """Everything one sample's volume is a pure function of (what the builder builds from).

    The pipeline's :class:`faket_dask.pipeline.SampleSpec` (one sample of a run) makes one.

    Attributes
    ----------
    sample
        The config's ``sample`` section.
    shape
        ``(Z, Y, X)`` of the volume: ``(sample.thickness, *tilts.shape)``.
    pixel_spacing
        Å per voxel.
    seed, sample_id
        The dataset seed and this sample's id.
    base_dir
        Folder against which relative template and import paths are tried first (e.g. the
        config file's folder); then the working directory.
    """

    sample: SampleConfig
    shape: tuple[int, int, int]
    pixel_spacing: float
    seed: int = 0
    sample_id: int = 0
    base_dir: str | None = None

    @classmethod
    def from_config(
        cls,
        config: SimulationConfig,
        sample_id: int = 0,
        *,
        seed: int | None = None,
        base_dir: str | Path | None = None,
    ) -> BuildSpec:
        """The spec of sample ``sample_id`` of a dataset (``seed`` overrides ``config.seed``)."""
        h, w = config.tilts.shape
        return cls(
            sample=config.sample,
            shape=(int(config.sample.thickness), int(h), int(w)),
            pixel_spacing=float(config.tilts.pixel_spacing),
            seed=int(config.seed if seed is None else seed),
            sample_id=int(sample_id),
            base_dir=None if base_dir is None else str(base_dir),
        )

    def resolve(self, path: str) -> str:
        """A config path resolved against ``base_dir`` (if the file is there) or as given."""
        p = Path(path).expanduser()
        if not p.is_absolute() and self.base_dir is not None:
            q = Path(self.base_dir) / p
            if q.exists():
                return str(q)
        return str(p)




def _check_rows(y0: int, y1: int, ny: int) -> tuple[int, int]:
    y0, y1 = int(y0), int(y1)
    if not 0 <= y0 < y1 <= ny:
        raise InputError(f"slab rows [{y0}, {y1}) are outside the volume's 0..{ny} rows")
    return y0, y1
