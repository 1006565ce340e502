import numpy as np
import pytest
import xarray as xr

from faket_dask.errors import InputError
from faket_dask.io.zarr_io import (
    TILT_DIMS,
    open_group_dataset,
    pick_variable,
    split_zarr_path,
    write_dataset,
)

pytestmark = pytest.mark.timeout(30)


def test_split_paths(tmp_path):
    root, group = split_zarr_path("a/data.zarr")
    assert str(root) == "a/data.zarr" and group is None
    root, group = split_zarr_path("x/data.zarr/samples/000012/tilts")
    assert root.name == "data.zarr" and group == "samples/000012/tilts"


def test_groups_inside_a_store_open_with_xarray(tmp_path):
    store = tmp_path / "d.zarr"
    a = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    write_dataset(store, {"noisy": a}, TILT_DIMS, attrs={"pixel_spacing": 4.0})
    write_dataset(store / "samples" / "000001" / "tilts", {"styled": a + 1, "noisy": a}, TILT_DIMS)
    ds = xr.open_zarr(store, group="samples/000001/tilts", consolidated=False)
    np.testing.assert_array_equal(ds["styled"].values, a + 1)
    ds_root = open_group_dataset(store)
    assert ds_root.attrs["pixel_spacing"] == 4.0
    with pytest.raises(InputError, match="several"):
        pick_variable(ds, TILT_DIMS, None, "p")
    assert pick_variable(ds, TILT_DIMS, "styled", "p") == "styled"
    with pytest.raises(InputError, match="no array 'clean'"):
        pick_variable(ds, TILT_DIMS, "clean", "p")


def test_existing_group_is_refused_and_kept(tmp_path):
    store = tmp_path / "d.zarr"
    write_dataset(store, {"v": np.ones((1, 2, 2), np.float32)}, TILT_DIMS)
    with pytest.raises(InputError, match="exists"):
        write_dataset(store, {"v": np.zeros((1, 2, 2), np.float32)}, TILT_DIMS)
    np.testing.assert_array_equal(open_group_dataset(store)["v"].values, 1)


def test_not_a_store(tmp_path):
    (tmp_path / "plain.zarr").mkdir()
    with pytest.raises(InputError, match="not a Zarr v3 store"):
        open_group_dataset(tmp_path / "plain.zarr")
    write_dataset(tmp_path / "s.zarr", {"v": np.ones((1, 2, 2), np.float32)}, TILT_DIMS)
    with pytest.raises(InputError, match="no group"):
        open_group_dataset(tmp_path / "s.zarr" / "samples")
