"""The dataset store: root, markers, incomplete samples, manifest, consolidation."""

from __future__ import annotations

import json

import pytest
from _sample_group import write_sample

from faket_dask.errors import InputError
from faket_dask.io import store as st

pytestmark = pytest.mark.timeout(60)


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


def test_incomplete_sample_is_replaced(tmp_path):
    path = tmp_path / "d.zarr"
    st.create_store(path, {})
    write_sample(path, 3, complete=False)
    folder = path / "samples" / "000003"
    stray = folder / "tilts" / "styled" / "c" / "0.abc.partial"
    stray.write_bytes(b"torn")
    assert not st.is_complete(path, 3)
    g = st.prepare_sample(path, 3, {"seed": 2})
    assert not stray.exists() and not (folder / "tilts").exists()
    assert dict(g.attrs)["seed"] == 2 and dict(g.attrs)["complete"] is False
    write_sample(path, 4)
    with pytest.raises(FileExistsError):
        st.prepare_sample(path, 4, {})


def test_completed_ids_and_manifest(tmp_path):
    path = tmp_path / "d.zarr"
    st.create_store(path, {})
    for sid in (0, 1, 2):
        write_sample(path, sid, complete=sid != 1)
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
    write_sample(path, 0)
    st.consolidate(path)
    assert "consolidated_metadata" in json.loads((path / "zarr.json").read_text())
    st.unconsolidate(path)
    meta = json.loads((path / "zarr.json").read_text())
    assert "consolidated_metadata" not in meta and meta["attributes"]["faket_dask"]["x"] == 1
    (path / "zarr.json.1.partial").write_text("x")
    assert st.remove_partial_files(path) == 1


def test_input_group_attrs_round_trip(tmp_path):
    st.create_store(tmp_path / "d.zarr", {"seed": 1})
    attrs = {"noise_model": {"snr": 0.5, "curve": [1.0, 2.5]}}
    folder = st.write_input_group(tmp_path / "d.zarr", "inputs/noise_model_00", attrs)
    assert folder == tmp_path / "d.zarr" / "inputs" / "noise_model_00"
    assert st.read_group_attrs(folder) == attrs
    # an independent reader: zarr itself sees the group and its attributes
    import zarr

    g = zarr.open_group(str(tmp_path / "d.zarr"), path="inputs/noise_model_00", mode="r")
    assert dict(g.attrs) == attrs
    # written again, the group is replaced, not merged
    st.write_input_group(tmp_path / "d.zarr", "inputs/noise_model_00", {"calibration": {"a": 1}})
    assert st.read_group_attrs(folder) == {"calibration": {"a": 1}}
    assert st.read_group_attrs(tmp_path / "nothing") is None


def test_open_array_and_subgroup_narrow_or_refuse(tmp_path):
    import numpy as np
    import zarr

    root = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    sub = root.create_group("tilts")
    sub.attrs["pixel_spacing"] = 7.5
    sub.create_array("noisy", data=np.arange(6, dtype=np.float32).reshape(1, 2, 3))
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="r")

    tilts = st.open_subgroup(g, "tilts")
    assert isinstance(tilts, zarr.Group)
    arr = st.open_array(tilts, "noisy")
    assert isinstance(arr, zarr.Array)
    np.testing.assert_array_equal(arr[...], np.arange(6).reshape(1, 2, 3))
    assert st.node_attrs(tilts) == {"pixel_spacing": 7.5}
    # the wrong kind of node, or none, is one clear InputError naming the path
    with pytest.raises(InputError, match=r"tilts is a group, expected an array"):
        st.open_array(g, "tilts")
    with pytest.raises(InputError, match=r"noisy is an array, expected a group"):
        st.open_subgroup(tilts, "noisy")
    with pytest.raises(InputError, match=r"has no member 'volume'"):
        st.open_subgroup(g, "volume")
