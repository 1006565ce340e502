"""NGFF 0.4 / Zarr v2 export: the 0.4 schemas, the pyramid, and the readers of the field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _ext_venv import run_script, venv_python
from _tiny_store import make_store

from faket_dask.errors import InputError
from faket_dask.io.ome import downsample_labels, downsample_mean, label_colour, pyramid
from faket_dask.read.export_ngff import export_ngff04

pytestmark = pytest.mark.timeout(400)

SCHEMAS = Path(__file__).parents[1] / "io" / "data" / "ngff-0.4"


def _validator(name: str):
    jsonschema = pytest.importorskip("jsonschema")
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / name).read_text()))


def test_downsampling_means_and_label_modes():
    rng = np.random.default_rng(3)
    img = rng.normal(size=(5, 6, 7)).astype(np.float32)
    half = downsample_mean(img)
    assert half.shape == (3, 3, 4) and half.dtype == np.float32
    np.testing.assert_allclose(half[1, 2, 0], img[2:4, 4:6, 0:2].mean(), rtol=1e-6)
    np.testing.assert_allclose(half[2, 0, 3], img[4, 0:2, 6].mean(), rtol=1e-6)  # edge-padded
    lab = rng.integers(0, 4, size=(6, 6, 8)).astype(np.uint16)
    out = downsample_labels(lab)
    for idx in np.ndindex(*out.shape):
        block = lab[tuple(slice(2 * i, 2 * i + 2) for i in idx)].ravel()
        counts = np.bincount(block)
        assert out[idx] == np.flatnonzero(counts == counts.max())[-1]  # mode, largest on ties
    # the same blocks and tie rule as the tomogram's binned masks
    from faket_dask.stages.reconstruction import bin_volume_labels

    np.testing.assert_array_equal(out, bin_volume_labels(lab, 2))
    levels = pyramid(lab, 3, labels=True)
    assert [lv.shape for lv in levels] == [(6, 6, 8), (3, 3, 4), (2, 2, 2)]
    assert set(np.unique(levels[2])) <= set(np.unique(lab))  # never invents a label


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("ngff04"), n=1)


@pytest.fixture(scope="module")
def exported(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("ngff04out") / "ngff"
    export_ngff04(store, out)
    return out / "sample_000000"


def test_export_validates_against_the_ngff_04_schemas(store, exported):
    from faket_dask.read.access import open_dataset

    image, label = _validator("image.schema"), _validator("label.schema")
    ds = open_dataset(store)
    classes = {int(k): v for k, v in ds.sample(0, "volume").attrs["classes"].items()}
    tomo = ds.sample(0, "tomogram")
    root = exported / "tomogram.zarr"
    attrs = json.loads((root / ".zattrs").read_text())
    assert not list(image.iter_errors(attrs))
    (ms,) = attrs["multiscales"]
    assert ms["version"] == "0.4" and [d["path"] for d in ms["datasets"]] == ["0", "1", "2"]
    vs = float(tomo.attrs["pixel_spacing"])
    for lv, d in enumerate(ms["datasets"]):
        scale, shift = d["coordinateTransformations"][0]["scale"], d["coordinateTransformations"]
        assert scale == [vs * 2**lv] * 3
        if lv:
            assert shift[1]["translation"] == [vs * (2**lv - 1) / 2] * 3
        meta = json.loads((root / str(lv) / ".zarray").read_text())
        assert meta["zarr_format"] == 2 and meta["dimension_separator"] == "/"
        assert meta["shape"] == [-(-n // 2**lv) for n in tomo.tomogram.shape]
    assert json.loads((root / "labels" / ".zattrs").read_text())["labels"] == [
        "class_mask",
        "instance_mask",
    ]
    lab = json.loads((root / "labels" / "class_mask" / ".zattrs").read_text())
    assert not list(image.iter_errors(lab)) and not list(label.iter_errors(lab))
    il = lab["image-label"]
    assert il["version"] == "0.4" and il["source"] == {"image": "../../"}
    assert {p["label-value"]: p["class"] for p in il["properties"]} == classes
    assert all(c["rgba"] == list(label_colour(c["label-value"])) for c in il["colors"])
    vol = json.loads((exported / "volume.zarr" / ".zattrs").read_text())
    assert not list(image.iter_errors(vol)) and not list(label.iter_errors(vol))
    assert "image-label" in vol  # no density saved: the class mask is the image, as labels


_OME_ZARR = """
import json, sys
from ome_zarr.format import FormatV04
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader, Label
import numpy as np
out = []
for node in Reader(parse_url(sys.argv[1], fmt=FormatV04()))():
    if not node.data:
        continue  # the "labels" group itself
    ms = node.metadata.get("coordinateTransformations") or []
    out.append({
        "path": str(node.zarr),
        "label": bool(node.load(Label)),
        "levels": [list(d.shape) for d in node.data],
        "scale": [t[0]["scale"] for t in ms] if ms else None,
        "sum0": float(np.asarray(node.data[0]).astype("f8").sum()),
        "names": (node.metadata.get("properties") and
                  {str(k): v.get("class") for k, v in node.metadata["properties"].items()}),
    })
print(json.dumps(out))
"""


@pytest.mark.slow
def test_ome_zarr_reads_the_pyramid_and_the_labels(store, exported):
    from faket_dask.read.access import open_dataset

    python = venv_python("ome-zarr", ["ome-zarr"], "ome_zarr")
    nodes = json.loads(
        run_script(python, _OME_ZARR, str(exported / "tomogram.zarr")).strip().splitlines()[-1]
    )
    tomo = open_dataset(store).sample(0, "tomogram")
    vs = float(tomo.attrs["pixel_spacing"])
    image = [n for n in nodes if not n["label"]]
    labels = [n for n in nodes if n["label"]]
    assert len(image) == 1 and len(labels) == 2
    assert len(image[0]["levels"]) == 3 and image[0]["levels"][0] == list(tomo.tomogram.shape)
    assert image[0]["scale"][0] == [vs] * 3 and image[0]["scale"][2] == [4 * vs] * 3
    assert image[0]["sum0"] == pytest.approx(float(tomo.tomogram.astype("f8").sum()), rel=1e-5)
    want = sorted(float(tomo[k].astype("f8").sum()) for k in ("class_mask", "instance_mask"))
    assert sorted(n["sum0"] for n in labels) == want
    classes = open_dataset(store).sample(0, "volume").attrs["classes"]
    assert [n["names"] for n in labels if n["names"]] == [classes]


_NAPARI = """
import json, sys
from napari_ome_zarr import napari_get_reader
import numpy as np
layers = napari_get_reader(sys.argv[1])(sys.argv[1])
out = []
for data, kwargs, kind in layers:
    data = data if isinstance(data, list) else [data]
    out.append({"kind": kind, "name": kwargs.get("name"), "levels": len(data),
                "shape": list(data[0].shape), "scale": [float(s) for s in kwargs.get("scale", [])],
                "max": float(np.asarray(data[-1]).max())})
print(json.dumps(out))
"""


@pytest.mark.slow
def test_napari_reader_returns_a_multiscale_image_and_labels(store, exported):
    """napari-ome-zarr's reader plugin (no GUI): an Image layer with the pyramid, Labels layers."""
    from faket_dask.read.access import open_dataset

    python = venv_python("napari-ome-zarr", ["napari-ome-zarr"], "napari_ome_zarr")
    layers = json.loads(
        run_script(python, _NAPARI, str(exported / "tomogram.zarr")).strip().splitlines()[-1]
    )
    tomo = open_dataset(store).sample(0, "tomogram")
    vs = float(tomo.attrs["pixel_spacing"])
    kinds = sorted(la["kind"] for la in layers)
    assert kinds == ["image", "labels", "labels"]
    (img,) = [la for la in layers if la["kind"] == "image"]
    assert img["levels"] == 3 and img["shape"] == list(tomo.tomogram.shape)
    assert img["scale"] == pytest.approx([vs] * 3)
    for la in layers:
        if la["kind"] == "labels":
            assert la["scale"] == pytest.approx([vs] * 3) and la["levels"] == 3


def test_bad_output(store, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep").write_text("1")
    with pytest.raises(InputError, match="not empty"):
        export_ngff04(store, tmp_path / "x")
    with pytest.raises(InputError, match="not a complete sample"):
        export_ngff04(store, tmp_path / "y", sample_ids=[5])
