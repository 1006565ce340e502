"""OME-Zarr 0.5 metadata: the builder, the validator, the NGFF schema, and real readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from _ext_venv import run_script, venv_python
from _tiny_store import make_store

from faket_dask.io import ome

pytestmark = pytest.mark.timeout(300)

SCHEMAS = Path(__file__).parent / "data" / "ngff-0.5"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("ome"), n=1)


def _schema_validator():
    jsonschema = pytest.importorskip("jsonschema")
    from referencing import Registry, Resource

    image = json.loads((SCHEMAS / "image.schema").read_text())
    version = json.loads((SCHEMAS / "_version.schema").read_text())
    registry = Registry().with_resources(
        [
            (
                "https://ngff.openmicroscopy.org/0.5/schemas/_version.schema",
                Resource.from_contents(version),
            ),
            (
                "https://ngff.openmicroscopy.org/0.5/schemas/image.schema",
                Resource.from_contents(image),
            ),
        ]
    )
    return jsonschema.Draft202012Validator(image, registry=registry)


def _group_attrs(path: Path, group: str) -> dict:
    return json.loads((path / group / "zarr.json").read_text())["attributes"]


def test_primary_array_prefers_styled_then_noisy():
    assert ome.primary_array("tilts", ["noiseless", "noisy", "styled"]) == "styled"
    assert ome.primary_array("tilts", ["noiseless", "noisy"]) == "noisy"
    assert ome.primary_array("tilts", ["tilt_angle"]) is None
    assert ome.primary_array("volume", ["class_mask", "instance_mask"]) == "class_mask"
    assert ome.primary_array("volume", ["density", "class_mask"]) == "density"
    assert ome.grid_ome_attrs("particles", ["x"], 1.0) == {}


def test_builder_output_passes_the_ngff_schema_and_the_validator():
    validator = _schema_validator()
    for grid, names in (("tilts", ["styled"]), ("tomogram", ["tomogram"])):
        attrs = ome.grid_ome_attrs(grid, names, 12.5)
        assert not list(validator.iter_errors(attrs))
        assert ome.validate_ome(attrs) == []
        (ms,) = attrs["ome"]["multiscales"]
        assert ms["datasets"][0]["coordinateTransformations"][0]["scale"][-1] == 12.5


def test_validator_and_schema_reject_broken_metadata():
    validator = _schema_validator()
    good = ome.grid_ome_attrs("tilts", ["styled"], 10.0)
    one_space = json.loads(json.dumps(good))
    one_space["ome"]["multiscales"][0]["axes"][1]["type"] = "tilt2"
    assert list(validator.iter_errors(one_space))  # the schema needs 2-3 space axes
    assert any("space axes" in p for p in ome.validate_ome(one_space))
    old = json.loads(json.dumps(good))
    old["ome"]["version"] = "0.4"
    assert list(validator.iter_errors(old))
    assert ome.validate_ome(old)
    short = json.loads(json.dumps(good))
    short["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [1, 2]
    assert any("scale length" in p for p in ome.validate_ome(short))  # the schema cannot see this
    assert ome.validate_ome({}) == ["no 'ome' attribute"]


@pytest.mark.parametrize("grid", ["tilts", "tomogram", "volume"])
def test_store_groups_are_valid_ome_and_still_open_in_xarray(store, grid):
    group = f"samples/000000/{grid}"
    attrs = _group_attrs(store, group)
    assert not list(_schema_validator().iter_errors(attrs))
    g = zarr.open_group(str(store / group), mode="r")
    # every array below the group: the pyramid levels live in subgroups (multiscale/1, ...)
    arrays = {k: v for k, v in g.members(max_depth=None) if isinstance(v, zarr.Array)}
    assert ome.validate_ome(attrs, arrays) == []
    path = attrs["ome"]["multiscales"][0]["datasets"][0]["path"]
    scale = attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    ds = xr.open_zarr(store, group=group, consolidated=False)
    assert path in ds.data_vars and ds[path].ndim == 3
    # the OME scale is the xarray coordinate spacing (Å), independently recomputed
    assert scale[-1] == pytest.approx(float(np.diff(ds.x.values[:2])[0]))
    assert scale[-1] == pytest.approx(attrs["pixel_spacing"])


def test_validator_checks_the_dataset_exists_in_the_group(store):
    g = zarr.open_group(str(store / "samples/000000/tilts"), mode="r")
    attrs = ome.grid_ome_attrs("tilts", ["content"], 20.0)
    arrays = {k: g[k] for k in g.array_keys()}
    assert any("not an array" in p for p in ome.validate_ome(attrs, arrays))


_READ = """
import json
import sys
from ome_zarr.io import parse_url
from ome_zarr.reader import Multiscales, Reader
for g in sys.argv[1:]:
    loc = parse_url(g)
    node = list(Reader(loc)())[0]
    assert any(isinstance(s, Multiscales) for s in node.specs), node.specs
    data = node.data[0]
    ct = node.metadata["coordinateTransformations"][0][0]["scale"]
    axes = [a["name"] for a in node.metadata["axes"]]
    total = float(data.sum().compute())
    print(json.dumps([g.rsplit("/", 1)[-1], loc.version, list(data.shape), axes, ct, total]))
"""


@pytest.mark.slow
def test_ome_zarr_reader_opens_tilts_and_tomogram(store):
    python = venv_python("ome-zarr", ["ome-zarr"], "ome_zarr.reader")
    groups = [str(store / f"samples/000000/{g}") for g in ("tilts", "tomogram")]
    out = run_script(python, _READ, *groups).strip().splitlines()
    for line, grid in zip(out, ("tilts", "tomogram"), strict=True):
        name, version, shape, axes, scale, total = json.loads(line)
        assert name == grid and version == "0.5"
        ds = xr.open_zarr(store, group=f"samples/000000/{grid}", consolidated=False)
        primary = "styled" if grid == "tilts" else "tomogram"
        assert shape == list(ds[primary].shape)
        assert axes == list(ds[primary].dims)
        assert scale[-1] == pytest.approx(ds.attrs["pixel_spacing"])
        assert total == pytest.approx(float(ds[primary].astype("f8").sum()), rel=1e-4)
