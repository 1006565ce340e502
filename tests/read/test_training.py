"""PatchDataset: deterministic (image patch, label patch) pairs aligned with the store."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import xarray as xr
from _tiny_store import make_store

from faket_dask.errors import InputError
from faket_dask.read import access
from faket_dask.read.training import PatchDataset

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    src = make_store(tmp_path_factory.mktemp("train"), n=3)
    dst = tmp_path_factory.mktemp("train_split") / "s.zarr"
    shutil.copytree(src, dst)
    access.write_splits(dst, (0.34, 0.33, 0.33), seed=1)
    return dst


def _grid(store, sid, grid):
    return xr.open_zarr(store, group=f"samples/{sid:06d}/{grid}", consolidated=False)


def test_tomogram_patches_match_the_store_at_their_origin(store):
    pd = PatchDataset(store, grid="tomogram", patch=(2, 4, 4), split="all", patches_per_sample=3)
    assert len(pd) == 9
    for i in range(len(pd)):
        image, label = pd[i]
        sid, (z, y, x) = pd.origin(i)
        g = _grid(store, sid, "tomogram")
        assert image.dtype == torch.float32 and image.shape == (1, 2, 4, 4)
        assert label.dtype == torch.int64 and label.shape == (2, 4, 4)
        np.testing.assert_array_equal(
            image[0].numpy(), g.tomogram.values[z : z + 2, y : y + 4, x : x + 4]
        )
        np.testing.assert_array_equal(
            label.numpy(), g.class_mask.values[z : z + 2, y : y + 4, x : x + 4]
        )


def test_patch_positions_are_deterministic_and_seeded(store):
    a = PatchDataset(store, patch=(2, 4, 4), split="all", seed=5)
    b = PatchDataset(store, patch=(2, 4, 4), split="all", seed=5)
    c = PatchDataset(store, patch=(2, 4, 4), split="all", seed=6)
    oa = [a.origin(i) for i in range(len(a))]
    assert oa == [b.origin(i) for i in range(len(b))]
    assert oa != [c.origin(i) for i in range(len(c))]
    assert len({o for _, o in oa}) > 1  # positions vary within a sample


def test_split_selects_the_recorded_ids_and_works_in_a_dataloader(store):
    rec = access.open_dataset(store).splits["ids"]
    for name in access.SPLIT_NAMES:
        if rec[name]:
            pd = PatchDataset(store, patch=(2, 4, 4), split=name, patches_per_sample=2)
            assert sorted({pd.origin(i)[0] for i in range(len(pd))}) == rec[name]
    pd = PatchDataset(store, patch=(2, 4, 4), split="all", patches_per_sample=2)
    loader = torch.utils.data.DataLoader(pd, batch_size=4, shuffle=False)
    images, labels = next(iter(loader))
    assert images.shape == (4, 1, 2, 4, 4) and labels.shape == (4, 2, 4, 4)


def test_tilt_patches_pair_with_the_class_mask_column(store):
    pd = PatchDataset(store, grid="tilts", modality="noisy", patch=(8, 8), split="all")
    image, label = pd[4]
    sid, (y, x) = pd.origin(4)
    tilts, vol = _grid(store, sid, "tilts"), _grid(store, sid, "volume")
    assert image.shape == (3, 8, 8) and label.shape == (vol.sizes["z"], 8, 8)
    np.testing.assert_array_equal(image.numpy(), tilts.noisy.values[:, y : y + 8, x : x + 8])
    np.testing.assert_array_equal(label.numpy(), vol.class_mask.values[:, y : y + 8, x : x + 8])


def test_bad_requests_name_the_problem(store):
    with pytest.raises(InputError, match="does not fit"):
        PatchDataset(store, patch=(64, 64, 64), split="all")
    with pytest.raises(InputError, match="reconstructed from"):
        PatchDataset(store, modality="noiseless", patch=(2, 4, 4), split="all")
    with pytest.raises(InputError, match="density"):
        PatchDataset(store, grid="volume", patch=(2, 4, 4), split="all")
    with pytest.raises(InputError, match="no tilt modality"):
        PatchDataset(store, grid="tilts", modality="content", patch=(4, 4), split="all")
