"""The dataset store: layout, whole-shard writes, markers, manifest, consolidation."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import xarray as xr

from faket_dask.errors import InputError
from faket_dask.io import store as st

pytestmark = pytest.mark.timeout(60)


def _sample(path, sid, *, complete=True, dtype="float32"):
    g = st.prepare_sample(path, sid, {"seed": 1})
    data = np.random.default_rng(sid).normal(size=(5, 24, 20)).astype("f4")
    tw = st.TiltsWriter(
        g,
        ["styled", "noisy"],
        data.shape,
        np.linspace(-40, 40, 5),
        7.5,
        dtype=dtype,
        tilts_per_shard=2,
        chunk=16,
    )
    tw.write_all("styled", data)
    tw.write_all("noisy", -data)
    sums = tw.checksums()
    sums |= st.write_grid(
        g,
        "volume",
        {"class_mask": np.zeros((4, 24, 20), "u1"), "instance_mask": np.ones((4, 24, 20), "u4")},
        7.5,
    )
    sums |= st.write_particles(
        g, {"class_id": np.array([1, 2]), "position_px": np.ones((2, 3))}, star="data_\n"
    )
    if complete:
        st.mark_complete(g, {"checksums": sums})
    return data, sums


def test_create_and_refuse_existing(tmp_path):
    path = tmp_path / "d.zarr"
    st.create_store(path, {"config": {"seed": 3}})
    assert st.is_store(path)
    attrs = st.read_store_attrs(path)
    assert attrs["config"] == {"seed": 3} and attrs["format"] == st.FORMAT_VERSION
    assert (path / "samples" / "zarr.json").is_file()
    with pytest.raises(InputError, match="already exists; pass --resume"):
        st.create_store(path, {})
    st.update_store_attrs(path, n_samples=4)
    assert st.read_store_attrs(path)["n_samples"] == 4


def test_sample_layout_opens_with_xarray(tmp_path):
    path = tmp_path / "d.zarr"
    st.create_store(path, {})
    data, sums = _sample(path, 7, dtype="float16")
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
    assert sums["styled"] == st.array_checksum(ds.styled.values)
    assert sums["instance_mask"] == st.array_checksum(vol.instance_mask.values)
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
    tw = st.TiltsWriter(g, ["noisy"], (5, 16, 16), np.arange(5.0), 1.0, tilts_per_shard=2)
    with pytest.raises(ValueError, match="whole shards"):
        tw.write("noisy", 0, np.zeros((1, 16, 16)))
    tw.write("noisy", 0, np.zeros((2, 16, 16)))
    with pytest.raises(ValueError, match="in order"):
        tw.write("noisy", 4, np.zeros((1, 16, 16)))
    tw.write("noisy", 2, np.zeros((2, 16, 16)))
    tw.write("noisy", 4, np.zeros((1, 16, 16)))  # the last, short shard
    assert tw.checksums()["noisy"] == st.array_checksum(np.zeros((5, 16, 16), "f4"))


def test_incomplete_sample_is_replaced(tmp_path):
    path = tmp_path / "d.zarr"
    st.create_store(path, {})
    _sample(path, 3, complete=False)
    folder = path / "samples" / "000003"
    stray = folder / "tilts" / "styled" / "c" / "0.abc.partial"
    stray.write_bytes(b"torn")
    assert not st.is_complete(path, 3)
    g = st.prepare_sample(path, 3, {"seed": 2})
    assert not stray.exists() and not (folder / "tilts").exists()
    assert dict(g.attrs)["seed"] == 2 and dict(g.attrs)["complete"] is False
    _sample(path, 4)
    with pytest.raises(FileExistsError):
        st.prepare_sample(path, 4, {})


def test_completed_ids_and_manifest(tmp_path):
    path = tmp_path / "d.zarr"
    st.create_store(path, {})
    for sid in (0, 1, 2):
        _sample(path, sid, complete=sid != 1)
    rows = [{"sample_id": 0, "status": "ok"}, {"sample_id": 1, "status": "failed"}]
    st.write_manifest(path, rows)
    with open(path / st.MANIFEST, "a") as f:
        f.write('{"sample_id": 2, "sta')  # torn line from a killed client
    with pytest.warns(UserWarning, match="torn row"):
        rows = st.read_manifest(path)
    assert [r["sample_id"] for r in rows] == [0, 1]
    # the markers decide: 0 and 2 are complete, 1 is not, 5 does not exist
    assert st.completed_ids(path, range(6)) == {0, 2}
    assert st.completed_ids(path) == {0, 2}


def test_consolidate_and_unconsolidate(tmp_path):
    path = tmp_path / "d.zarr"
    st.create_store(path, {"x": 1})
    _sample(path, 0)
    st.consolidate(path)
    assert "consolidated_metadata" in json.loads((path / "zarr.json").read_text())
    st.unconsolidate(path)
    meta = json.loads((path / "zarr.json").read_text())
    assert "consolidated_metadata" not in meta and meta["attributes"]["faket_dask"]["x"] == 1
    (path / "zarr.json.1.partial").write_text("x")
    assert st.remove_partial_files(path) == 1


def test_shared_filesystem_check(tmp_path, dask_client):
    st.check_shared_filesystem(dask_client, tmp_path)
    assert not list(tmp_path.iterdir())  # the token file is removed
    assert st._read_token(str(tmp_path / "nothing"), "t") is False
