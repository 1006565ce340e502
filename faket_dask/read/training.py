"""A PyTorch ``Dataset`` of (image patch, label patch) pairs read straight from a store.

Pairs, by grid
--------------
* ``tomogram``: a ``(1, pz, py, px)`` patch of the reconstruction (reconstructed from the
  modality recorded in the group's ``source`` attr, ``styled`` by default) and the
  ``(pz, py, px)`` patch of the *binned* class mask on the same grid: voxel-aligned labels.
* ``volume``: the simulated density (saved with ``output.save_density``) and the class mask,
  both on the full-resolution grid.
* ``tilts``: a ``(T, py, px)`` patch of a tilt modality (all tilts; tilts as channels) and the
  ``(Z, py, px)`` class-mask column under the same detector footprint. The volume and the
  detector share y and x (projection is about Y), so the column is exactly what the untilted
  view sees; at tilt θ, rays cross up to ``Z·tan|θ|`` pixels of neighbouring columns, so the
  pair is only approximately aligned at high tilts. That is the honest limit of 2-D labels for
  projections; train on tomogram patches when voxel alignment matters.

Patch positions are a pure function of ``(seed, sample id, patch index)``, so an epoch is the
same on every run and in every ``DataLoader`` worker.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from faket_dask.errors import InputError
from faket_dask.io.ome import primary_array
from faket_dask.read.access import open_dataset

__all__ = ["PatchDataset"]

_DEFAULT_IMAGE = {"tomogram": "tomogram", "volume": "density"}


class PatchDataset(Dataset):
    """(image patch, label patch) pairs sampled deterministically from a store's samples.

    Parameters
    ----------
    store
        A dataset store written by ``faket-dask generate``.
    grid
        ``tomogram``, ``volume`` or ``tilts`` (see the module docstring for each pairing).
    modality
        The image: for ``tilts`` a tilt modality (default: ``styled`` when stored); for
        ``tomogram`` the modality the tomogram was reconstructed from (checked against the
        group's ``source``; default: whatever it is); for ``volume``, ``density``.
    patch
        ``(pz, py, px)`` in voxels of the grid (for ``tilts``: ``(py, px)``; a leading depth
        is ignored). Must fit inside the grid.
    split
        ``train``, ``validation``, ``test`` (recorded by ``faket-dask split``) or ``all``.
    patches_per_sample
        Patches drawn from each sample per epoch.
    seed
        Seed of the patch positions.
    label
        The label array on the same grid (``class_mask`` or ``instance_mask``).

    Items are ``(image, label)``: ``image`` float32 ``(1, pz, py, px)`` (``(T, py, px)`` for
    ``tilts``), ``label`` int64 ``(pz, py, px)`` (``(Z, py, px)`` for ``tilts``).
    """

    def __init__(
        self,
        store: str | os.PathLike[str],
        grid: str = "tomogram",
        modality: str | None = None,
        patch: Sequence[int] = (64, 64, 64),
        split: str | None = "train",
        patches_per_sample: int = 8,
        seed: int = 0,
        label: str = "class_mask",
    ) -> None:
        self.dataset = open_dataset(store)
        self.path = Path(store)
        self.grid = grid
        if grid not in ("tomogram", "volume", "tilts"):
            raise InputError(f"grid {grid!r}: use tomogram, volume or tilts")
        self.ids = self.dataset.split_ids(split)
        if not self.ids:
            rec = (self.dataset.splits or {}).get("ids") or {}
            have = ", ".join(f"{k} {len(v)}" for k, v in rec.items()) or "none recorded"
            raise InputError(
                f"split {split!r} of {self.path} has no complete samples (splits: {have}); "
                f"generate more samples and run `faket-dask split` again, or use "
                f"split='train' or split='all'"
            )
        self.patches_per_sample = int(patches_per_sample)
        if self.patches_per_sample < 1:
            raise InputError("patches_per_sample must be at least 1")
        self.seed = int(seed)
        self.label = label
        first = self.dataset.sample(self.ids[0], "volume" if grid == "tilts" else grid)
        if label not in first.data_vars:
            raise InputError(f"no label array {label!r} on the {grid} grid")
        self.image = self._image_name(modality)
        self.image_shape, self.label_shape = self._shapes()
        p = tuple(int(x) for x in patch)
        self.patch = p[-2:] if grid == "tilts" else p
        if len(self.patch) != (2 if grid == "tilts" else 3) or min(self.patch) < 1:
            raise InputError(f"patch {list(patch)}: give (pz, py, px) (or (py, px) for tilts)")
        space = self.label_shape[-len(self.patch) :]
        if any(q > s for q, s in zip(self.patch, space, strict=True)):
            raise InputError(
                f"patch {list(self.patch)} does not fit the {grid} grid {list(space)} of "
                f"sample {self.ids[0]}; choose a smaller patch"
            )
        self._arrays: dict[tuple[int, str], Any] = {}

    def _image_name(self, modality: str | None) -> str:
        ds = self.dataset.sample(self.ids[0], self.grid)
        if self.grid == "tilts":
            name = modality or primary_array("tilts", [str(v) for v in ds.data_vars])
            if name not in ds.data_vars:
                have = ", ".join(str(v) for v in ds.data_vars)
                raise InputError(f"no tilt modality {name!r} in the store; it has {have}")
            return str(name)
        name = _DEFAULT_IMAGE[self.grid]
        if self.grid == "tomogram":
            source = ds.attrs.get("source")
            if modality not in (None, "tomogram", source):
                raise InputError(
                    f"the tomograms were reconstructed from {source!r}, not {modality!r}; "
                    "regenerate with another output.modalities order or use grid='tilts'"
                )
        elif modality not in (None, "density"):
            raise InputError(f"the volume grid holds only the density, not {modality!r}")
        if name not in ds.data_vars:
            raise InputError(f"no {name!r} on the {self.grid} grid (not saved by the config)")
        return name

    def _shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        img = self._array(self.ids[0], self.image, image=True)
        lab = self._array(self.ids[0], self.label, image=False)
        if tuple(img.shape[-2:]) != tuple(lab.shape[-2:]):
            raise InputError(
                f"the {self.grid} image {list(img.shape)} and label {list(lab.shape)} grids differ"
            )
        return tuple(img.shape), tuple(lab.shape)

    def _array(self, sample_id: int, name: str, *, image: bool) -> Any:
        import zarr

        key = (sample_id, name)
        arr = getattr(self, "_arrays", {}).get(key)
        if arr is None:
            grid = self.grid if (image or self.grid != "tilts") else "volume"
            arr = zarr.open_array(
                str(self.path / "samples" / f"{sample_id:06d}" / grid / name), mode="r"
            )
            if hasattr(self, "_arrays"):
                self._arrays[key] = arr
        return arr

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = {}  # zarr handles are reopened in each DataLoader worker
        return state

    def __len__(self) -> int:
        return len(self.ids) * self.patches_per_sample

    def origin(self, index: int) -> tuple[int, tuple[int, ...]]:
        """``(sample id, patch origin in voxels)`` of item ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        sid = self.ids[index // self.patches_per_sample]
        k = index % self.patches_per_sample
        rng = np.random.default_rng([self.seed, sid, k])
        lab = self._array(sid, self.label, image=False)
        space = tuple(lab.shape[-len(self.patch) :])
        origin = tuple(
            int(rng.integers(0, s - q + 1)) for s, q in zip(space, self.patch, strict=True)
        )
        return sid, origin

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sid, o = self.origin(int(index))
        sl = tuple(slice(a, a + q) for a, q in zip(o, self.patch, strict=True))
        img_arr = self._array(sid, self.image, image=True)
        lab_arr = self._array(sid, self.label, image=False)
        if self.grid == "tilts":
            image = np.asarray(img_arr[(slice(None), *sl)], dtype=np.float32)
            label = np.asarray(lab_arr[(slice(None), *sl)])
        else:
            image = np.asarray(img_arr[sl], dtype=np.float32)[None]
            label = np.asarray(lab_arr[sl])
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(
            label.astype(np.int64)
        )
