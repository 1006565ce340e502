"""Read a generated dataset: per-sample xarray datasets, the config, and train/val/test splits.

``faket_dask.open_dataset(store)`` is the entry point::

    ds = faket_dask.open_dataset("dataset.zarr")
    ds.ids                                   # complete sample ids
    tilts = ds.sample(0)                     # xarray.Dataset (tilt, y, x): styled, noisy, ...
    tomo = ds.sample(0, grid="tomogram")     # (z, y, x): tomogram, class_mask, instance_mask
    ds.split_ids("train")

Splits are assigned per sample id by a keyed hash (:func:`assign_split`), so a sample's split
never changes when the dataset grows, and recorded in the root attrs by :func:`write_splits`
(client only, like every root write).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faket_dask.config import config_from_dict
from faket_dask.errors import InputError
from faket_dask.io import store as st
from faket_dask.io.lock import store_lock
from faket_dask.read.export import dataset_attrs, read_particle_table

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

    from faket_dask.config import SimulationConfig

__all__ = [
    "GRIDS",
    "SPLIT_NAMES",
    "FaketDataset",
    "assign_split",
    "assign_splits",
    "dataset_attrs",
    "open_dataset",
    "write_splits",
]

GRIDS = ("tilts", "volume", "tomogram")
SPLIT_NAMES = ("train", "validation", "test")


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    f = tuple(float(x) for x in fractions)
    if len(f) != len(SPLIT_NAMES) or any(x < 0 for x in f) or abs(sum(f) - 1.0) > 1e-6:
        raise InputError(
            f"split fractions {list(f)} must be 3 non-negative numbers (train, validation, "
            "test) that sum to 1, e.g. --fractions 0.8 0.1 0.1"
        )
    return f


def assign_split(sample_id: int, fractions: Sequence[float], seed: int = 0) -> str:
    """The split of one sample: ``train``, ``validation`` or ``test``.

    ``u = SHA-256("faket-dask-split:<seed>:<sample_id>")`` read as a number in [0, 1); the
    sample goes to the first split whose cumulative fraction exceeds ``u``. Independent of
    the other samples, so adding samples never moves existing ones.
    """
    f = _check_fractions(fractions)
    digest = hashlib.sha256(f"faket-dask-split:{int(seed)}:{int(sample_id)}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    edge = 0.0
    for name, frac in zip(SPLIT_NAMES, f, strict=True):
        edge += frac
        if u < edge:
            return name
    return next(n for n, x in zip(reversed(SPLIT_NAMES), reversed(f), strict=True) if x > 0)


def assign_splits(
    ids: Iterable[int], fractions: Sequence[float], seed: int = 0
) -> dict[str, list[int]]:
    """``{split: sorted ids}`` for every split name (empty lists included)."""
    out: dict[str, list[int]] = {name: [] for name in SPLIT_NAMES}
    for i in sorted(int(i) for i in ids):
        out[assign_split(i, fractions, seed)].append(i)
    return out


def write_splits(
    store: str | os.PathLike[str], fractions: Sequence[float], seed: int = 0
) -> dict[str, Any]:
    """Assign the store's complete samples to splits and record them in the root attrs.

    Client only. Returns the record written under ``attrs["faket_dask"]["splits"]``:
    ``{"fractions", "seed", "method", "ids": {split: [ids]}}``.
    """
    p = Path(store)
    attrs = dataset_attrs(p)
    st.check_writable(p)
    n = int(attrs.get("n_samples", 0))
    done = st.completed_ids(p, range(n)) if n else st.completed_ids(p)
    f = _check_fractions(fractions)
    record = {
        "fractions": list(f),
        "seed": int(seed),
        "method": "sha256('faket-dask-split:<seed>:<sample_id>') -> u in [0,1) -> cumulative",
        "ids": assign_splits(done, f, seed),
    }
    with store_lock(p, "faket-dask split"):  # one writer at a time
        root_meta = json.loads((p / "zarr.json").read_text())
        was_consolidated = bool(root_meta.get("consolidated_metadata"))
        st.update_store_attrs(p, splits=record)
        if was_consolidated:
            st.consolidate(p)
    return record


@dataclass
class FaketDataset:
    """A generated dataset store, opened for reading.

    Attributes
    ----------
    path
        The store.
    attrs
        The shared metadata (``attrs["faket_dask"]`` of the root).
    ids
        Sorted ids of the complete samples.
    verify
        Re-read a sample's arrays and check their SHA-256 the first time it is opened (else
        only the cheap check: every file the sample recorded is there, with its size).
    """

    path: Path
    attrs: dict[str, Any]
    ids: list[int] = field(default_factory=list)
    verify: bool = False
    _checked: set[int] = field(default_factory=set, repr=False)

    @property
    def config(self) -> SimulationConfig:
        """The config the dataset was generated with."""
        return config_from_dict(self.attrs["config"], source=f"store {self.path}")

    @property
    def splits(self) -> dict[str, Any] | None:
        """The recorded split assignment, or ``None`` (see ``faket-dask split``)."""
        return self.attrs.get("splits")

    def split_ids(self, split: str | None) -> list[int]:
        """Complete ids of ``split`` (``None`` or ``all``: every complete id)."""
        if split in (None, "all"):
            return list(self.ids)
        if split not in SPLIT_NAMES:
            raise InputError(f"split {split!r}: use one of {', '.join(SPLIT_NAMES)} or all")
        rec = self.splits
        if rec is None:
            raise InputError(
                f"{self.path} has no splits recorded; run `faket-dask split {self.path}` first"
            )
        wanted = {int(i) for i in rec["ids"].get(split, [])}
        return [i for i in self.ids if i in wanted]

    def check_id(self, sample_id: int) -> int:
        """``sample_id`` as int; raises InputError unless it is a complete sample."""
        sid = int(sample_id)
        if sid not in self.ids:
            raise InputError(
                f"sample {sid} is not a complete sample of {self.path}; complete ids: "
                f"{_short(self.ids)}"
            )
        return sid

    def sample(self, sample_id: int, grid: str = "tilts") -> xr.Dataset:
        """One sample's grid as a lazy ``xarray.Dataset``.

        ``tilts``: ``(tilt, y, x)`` modalities with the ``tilt_angle`` coordinate (deg);
        ``volume``: ``(z, y, x)`` class and instance masks (and density); ``tomogram``: the
        reconstruction on its binned grid with binned masks. y/x/z coordinates are in Å.
        """
        import xarray as xr

        sid = self.check_id(sample_id)
        if grid not in GRIDS:
            raise InputError(f"grid {grid!r}: use one of {', '.join(GRIDS)}")
        self.check_bytes(sid)
        group = f"{st.sample_group(sid)}/{grid}"
        if not (self.path / group / "zarr.json").is_file():
            raise InputError(f"sample {sid} has no {grid} group (not saved by its config)")
        return xr.open_zarr(self.path, group=group, consolidated=False)

    def check_bytes(self, sample_id: int) -> None:
        """Refuse a damaged sample (cheap check, or the full one with ``verify``); once each."""
        from faket_dask.io.verify import check_sample

        sid = int(sample_id)
        if sid in self._checked:
            return
        problems, _ = check_sample(self.path, sid, full=self.verify)
        if problems:
            raise InputError(
                f"sample {sid} of {self.path} is damaged ({'; '.join(problems[:3])}); run "
                f"`faket-dask verify {self.path} --repair`, then generate --resume"
            )
        self._checked.add(sid)

    def sample_attrs(self, sample_id: int) -> dict[str, Any]:
        """The sample's attrs: what it drew, checksums, summary."""
        return st.read_sample_attrs(self.path, self.check_id(sample_id)) or {}

    def particles(self, sample_id: int) -> pd.DataFrame:
        """The sample's particle table (volume frame; see :mod:`faket_dask.stages.particles`)."""
        return read_particle_table(self.path, self.check_id(sample_id))

    def manifest(self) -> list[dict[str, Any]]:
        """The manifest rows (one per finished sample run)."""
        return st.read_manifest(self.path)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        n = self.attrs.get("n_samples")
        return f"FaketDataset({str(self.path)!r}, complete={len(self.ids)}/{n})"


def _short(ids: Sequence[int], k: int = 8) -> str:
    if not ids:
        return "none"
    head = ", ".join(str(i) for i in ids[:k])
    return head + (f", ... ({len(ids)} in all)" if len(ids) > k else "")


def open_dataset(store: str | os.PathLike[str], *, verify: bool = False) -> FaketDataset:
    """Open a dataset store written by ``faket-dask generate``.

    A sample is checked the first time it is opened: every file it recorded must be there with
    its size; with ``verify=True`` its arrays are re-read and their SHA-256 compared too. A
    damaged sample is refused (InputError).

    Raises
    ------
    InputError
        The path does not exist or is not a faket-dask store.
    """
    p = Path(store)
    if not p.exists():
        raise InputError(f"store {p} does not exist")
    attrs = dataset_attrs(p)
    n = int(attrs.get("n_samples", 0))
    ids = sorted(st.completed_ids(p, range(n)) if n else st.completed_ids(p))
    return FaketDataset(path=p, attrs=attrs, ids=ids, verify=verify)
