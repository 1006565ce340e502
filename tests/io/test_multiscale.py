"""The store's OME pyramids and labels: equal to the whole-array pyramid, new arrays only, read
by ome-zarr-py as a multiscale image with Labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from _ext_venv import run_script, venv_python
from _tiny_store import make_store

from faket_dask.io import ome
from faket_dask.io.multiscale import SLAB_ROWS, write_grid_multiscale

pytestmark = pytest.mark.timeout(300)

SCHEMAS = Path(__file__).parent / "data" / "ngff-0.5"


def _arrays(group) -> dict:
    return {k: v for k, v in group.members(max_depth=None) if isinstance(v, zarr.Array)}


@pytest.mark.parametrize("density", [True, False])
def test_slab_pyramid_equals_the_whole_array_pyramid(tmp_path, density):
    rng = np.random.default_rng(5)
    shape = (7, 2 * SLAB_ROWS + 45, 13)  # odd sizes, several slabs
    cls = rng.integers(0, 3, shape).astype(np.uint8)
    inst = rng.integers(0, 40, shape).astype(np.uint32)
    dens = rng.normal(size=shape).astype(np.float32)
    root = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g = root.create_group("volume")
    src = {"class_mask": cls, "instance_mask": inst} | ({"density": dens} if density else {})
    for k, v in src.items():
        g.create_array(k, shape=shape, dtype=v.dtype, chunks=(7, 64, 13), dimension_names="zyx")
        g[k][...] = v
    added = write_grid_multiscale(g, "volume", 12.0, {1: "ribo", 2: "membrane"})
    primary = "density" if density else "class_mask"
    attrs = dict(g.attrs)
    (ms,) = attrs["ome"]["multiscales"]
    assert [d["path"] for d in ms["datasets"]] == [primary, "multiscale/1", "multiscale/2"]
    assert ome.validate_ome(attrs, _arrays(g)) == []
    want = ome.pyramid(src[primary], 3, labels=not density)
    for lv, path in enumerate(ms["datasets"]):
        np.testing.assert_array_equal(g[path["path"]][...], want[lv])
    for k, v in src.items():  # the grid's own arrays are unchanged
        np.testing.assert_array_equal(g[k][...], v)
    masks = ["class_mask", "instance_mask"] if density else ["instance_mask"]
    assert dict(g["labels"].attrs)["ome"]["labels"] == masks
    for m in masks:
        sub = g["labels"][m]
        for lv, level in enumerate(ome.pyramid(src[m], 3, labels=True)):
            np.testing.assert_array_equal(sub[str(lv)][...], level)
        il = dict(sub.attrs)["ome"]["image-label"]
        assert il["source"] == {"image": "../../"}
    if density:
        il = dict(g["labels"]["class_mask"].attrs)["ome"]["image-label"]
        assert il["properties"] == [
            {"label-value": 1, "class": "ribo"},
            {"label-value": 2, "class": "membrane"},
        ]
    else:
        assert attrs["ome"]["image-label"]["colors"][0]["label-value"] == 1
    assert set(added) == set(_arrays(g)) - set(src)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("multiscale"), n=1)


_READ = """
import json, sys
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Reader
out = []
for node in Reader(parse_url(sys.argv[1]))():
    if not node.data:
        continue
    out.append({"label": bool(node.load(Label)), "levels": [list(d.shape) for d in node.data],
                "scale": node.metadata["coordinateTransformations"][0][0]["scale"],
                "names": {str(k): v.get("class")
                          for k, v in (node.metadata.get("properties") or {}).items()}})
print(json.dumps(out))
"""


@pytest.mark.slow
def test_store_tomogram_opens_as_a_pyramid_with_labels(store):
    from faket_dask.read.access import open_dataset

    ds = open_dataset(store)
    tomo = ds.sample(0, "tomogram")
    assert set(tomo.data_vars) == {"tomogram", "class_mask", "instance_mask"}  # xarray view
    python = venv_python("ome-zarr", ["ome-zarr"], "ome_zarr.reader")
    nodes = json.loads(
        run_script(python, _READ, str(store / "samples/000000/tomogram")).strip().splitlines()[-1]
    )
    vs = float(tomo.attrs["pixel_spacing"])
    (image,) = [n for n in nodes if not n["label"]]
    assert image["levels"][0] == list(tomo.tomogram.shape) and len(image["levels"]) == 3
    assert image["scale"] == [vs] * 3
    labels = [n for n in nodes if n["label"]]
    assert len(labels) == 2 and all(n["scale"] == [vs] * 3 for n in labels)
    classes = ds.sample(0, "volume").attrs["classes"]
    assert [n["names"] for n in labels if n["names"]] == [classes]


_NAPARI = """
import json, sys
from napari_ome_zarr import napari_get_reader
out = []
for path in sys.argv[1:]:
    for data, kwargs, kind in napari_get_reader(path)(path):
        data = data if isinstance(data, list) else [data]
        out.append({"group": path.rsplit("/", 1)[-1], "kind": kind, "levels": len(data),
                    "shape": list(data[0].shape),
                    "scale": [float(s) for s in kwargs.get("scale", [])]})
print(json.dumps(out))
"""


@pytest.mark.slow
def test_napari_reader_shows_the_store_masks_as_labels(store):
    """napari-ome-zarr's reader plugin (no GUI) on the store's tomogram and volume groups."""
    from faket_dask.read.access import open_dataset

    python = venv_python("napari-ome-zarr", ["napari-ome-zarr"], "napari_ome_zarr")
    groups = [str(store / f"samples/000000/{g}") for g in ("tomogram", "volume")]
    layers = json.loads(run_script(python, _NAPARI, *groups).strip().splitlines()[-1])
    ds = open_dataset(store)
    tomo, vol = ds.sample(0, "tomogram"), ds.sample(0, "volume")
    got = sorted((la["group"], la["kind"], la["levels"]) for la in layers)
    assert got == [
        ("tomogram", "image", 3),
        ("tomogram", "labels", 3),
        ("tomogram", "labels", 3),
        ("volume", "labels", 3),  # no density saved: the class mask is the volume's image
        ("volume", "labels", 3),  # and the instance mask
    ]
    for la in layers:
        grid = tomo if la["group"] == "tomogram" else vol
        assert la["shape"] == list(grid.class_mask.shape)
        assert la["scale"] == pytest.approx([grid.attrs["pixel_spacing"]] * 3)
