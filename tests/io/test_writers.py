"""The sample writers: the layout opens with xarray, whole-shard writes, checksums of the bytes."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import xarray as xr
import zarr
from _sample_group import write_sample

from faket_dask.errors import InputError
from faket_dask.io import store as st
from faket_dask.io import writers as wr

pytestmark = pytest.mark.timeout(60)


def test_sample_layout_opens_with_xarray(tmp_path):
    path = tmp_path / "d.zarr"
    st.create_store(path, {})
    data, sums = write_sample(path, 7, dtype="float16")
    st.consolidate(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # consolidated: no fallback warning
        ds = xr.open_zarr(path, group="samples/000007/tilts")
        vol = xr.open_zarr(path, group="samples/000007/volume")
        parts = xr.open_zarr(path, group="samples/000007/particles")
    assert ds.styled.dims == ("tilt", "y", "x") and ds.styled.dtype == np.float16
    np.testing.assert_allclose(ds.tilt_angle.values, np.linspace(-40, 40, 5))
    assert ds.attrs["pixel_spacing"] == 7.5 and float(ds.x[1]) == 7.5
    np.testing.assert_array_equal(ds.styled.values, data.astype("f2"))
    # a checksum is the SHA-256 of the stored array's raw bytes
    assert sums["styled"] == wr.array_checksum(ds.styled.values)
    assert sums["instance_mask"] == wr.array_checksum(vol.instance_mask.values)
    assert parts.sizes["particle"] == 2 and parts.attrs["star"] == "data_\n"
    # shards of tilts_per_shard x full H x full W, inner chunks (1, chunk, chunk)
    meta = json.loads((path / "samples/000007/tilts/styled/zarr.json").read_text())
    shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
    inner = meta["codecs"][0]["configuration"]["chunk_shape"]
    assert shard == [2, 32, 32] and inner == [1, 16, 16]
    assert st.read_sample_attrs(path, 7)["complete"] is True


def test_whole_shards_only(tmp_path):
    path = tmp_path / "d.zarr"
    st.create_store(path, {})
    g = st.prepare_sample(path, 0, {})
    tw = wr.TiltsWriter(
        g, ["noisy"], (5, 16, 16), np.arange(5.0), 1.0, wr.TiltLayout(tilts_per_shard=2)
    )
    with pytest.raises(ValueError, match="whole shards"):
        tw.write("noisy", 0, np.zeros((1, 16, 16)))
    tw.write("noisy", 0, np.zeros((2, 16, 16)))
    with pytest.raises(ValueError, match="in order"):
        tw.write("noisy", 4, np.zeros((1, 16, 16)))
    tw.write("noisy", 2, np.zeros((2, 16, 16)))
    tw.write("noisy", 4, np.zeros((1, 16, 16)))  # the last, short shard
    assert tw.checksums()["noisy"] == wr.array_checksum(np.zeros((5, 16, 16), "f4"))


def _shard_and_chunk(path, array):
    meta = json.loads((path / array / "zarr.json").read_text())
    shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
    return shard, meta["codecs"][0]["configuration"]["chunk_shape"]


def test_grid_writer_slab_by_slab(tmp_path):
    # a (z, y, x) grid written in Y slabs of 16 rows (the last one short) is the whole volume
    rng = np.random.default_rng(0)
    density = rng.normal(size=(6, 50, 20)).astype("f4")
    labels = rng.integers(0, 9, size=(6, 50, 20)).astype("u2")
    root = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    dtypes = {"density": np.float32, "class_mask": np.uint16}
    gw = wr.GridWriter(root, "volume", (6, 50, 20), dtypes, 2.5, rows=16, attrs={"classes": {}})
    with pytest.raises(ValueError, match="in order"):
        gw.write(16, {"density": density[:, 16:32], "class_mask": labels[:, 16:32]})
    with pytest.raises(ValueError, match="a slab of 8 rows"):
        gw.write(0, {"density": density[:, :8], "class_mask": labels[:, :8]})
    for y0 in range(0, 50, 16):
        gw.write(y0, {"density": density[:, y0 : y0 + 16], "class_mask": labels[:, y0 : y0 + 16]})
    sums = gw.checksums()
    vol = xr.open_zarr(tmp_path / "g.zarr", group="volume", consolidated=False)
    np.testing.assert_array_equal(vol.density.values, density)
    np.testing.assert_array_equal(vol.class_mask.values, labels)
    np.testing.assert_allclose(vol.y.values, np.arange(50) * 2.5)
    assert sums == {"density": wr.array_checksum(density), "class_mask": wr.array_checksum(labels)}
    assert vol.attrs["classes"] == {} and vol.attrs["ome"]["multiscales"][0]["datasets"]
    shard, inner = _shard_and_chunk(tmp_path / "g.zarr" / "volume", "density")
    assert shard == [6, 16, 20] and inner == [6, 16, 20]


def test_write_grid_is_one_shard_row_when_small(tmp_path):
    # write_grid stores whole arrays through the same writer: all of Y in one shard row
    data = np.arange(3 * 200 * 10, dtype="u4").reshape(3, 200, 10)
    root = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    sums = wr.write_grid(root, "tomogram", {"tomogram": data}, 4.0, attrs={"bin": 2})
    assert sums == {"tomogram": wr.array_checksum(data)}
    np.testing.assert_array_equal(root["tomogram/tomogram"][...], data)
    assert root["tomogram"].attrs["bin"] == 2 and root["tomogram"].attrs["pixel_spacing"] == 4.0
    shard, inner = _shard_and_chunk(tmp_path / "g.zarr" / "tomogram", "tomogram")
    assert shard == [3, 256, 10] and inner == [3, 128, 10]
    with pytest.raises(ValueError, match="share a shape"):
        wr.write_grid(root, "other", {"a": data, "b": data[:, :10]}, 4.0)


def test_particles_round_trip(tmp_path):
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    columns = {
        "id": np.array([1, 2, 3]),
        "class_name": np.array(["rod", "ball", "rod"], dtype=object),
        "x": np.array([0.5, 1.5, 2.5]),
    }
    sums = wr.write_particles(root, columns, star="data_\n", attrs={"shape": (1, 2, 3)})
    assert sums["x"] == wr.array_checksum(columns["x"])
    table = st.read_particles(tmp_path / "s.zarr", order=("x", "id"))
    assert list(table.columns)[:2] == ["x", "id"] and set(table.columns) == set(columns)
    assert table["class_name"].tolist() == ["rod", "ball", "rod"]
    np.testing.assert_array_equal(table["id"], columns["id"])
    assert root["particles"].attrs["shape"] == [1, 2, 3]
    with pytest.raises(InputError, match="no particle table"):
        st.read_particles(tmp_path / "s.zarr", group="nothing")
