"""ops/sample_build: a standalone sample store, written slab by slab, read back by xarray."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import xarray as xr
from _generate_helpers import tiny_config

from faket_dask.errors import InputError
from faket_dask.io.store import read_store_attrs
from faket_dask.ops.sample_build import write_sample_store
from faket_dask.stages.sample import BuildSpec, build_layout, iter_slabs

pytestmark = pytest.mark.timeout(120)


def test_slab_by_slab_store_equals_the_whole_volume_and_its_checksums(tmp_path):
    # 16 Y rows written as two slabs of 8
    layout = build_layout(BuildSpec.from_config(tiny_config(sample={"slab_size": 8}), 0))
    path = tmp_path / "s.zarr"
    stored = write_sample_store(path, layout, attrs={"seed": 7})
    assert read_store_attrs(path) == stored
    assert stored["kind"] == "sample" and stored["seed"] == 7
    ny = layout.shape[1]
    assert (ny, stored["slab_size"]) == (16, 8)
    # one slab of the whole Y range: the volume as one piece, against the slabs written
    _, _, density, class_mask, instance_mask = next(iter_slabs(layout, ny))
    whole = {"density": density, "class_mask": class_mask, "instance_mask": instance_mask}
    volume = xr.open_zarr(path, group="volume", consolidated=False)
    for name, expected in whole.items():
        got = volume[name].values
        np.testing.assert_array_equal(got, np.asarray(expected))
        assert hashlib.sha256(got.tobytes()).hexdigest() == stored["checksums"][name]
    table = xr.open_zarr(path, group="particles", consolidated=False)
    assert table.sizes["particle"] == len(layout.particles)

    with pytest.raises(InputError, match="exists; pass --overwrite"):
        write_sample_store(path, layout)
    assert write_sample_store(path, layout, save_density=False, overwrite=True)
    assert "density" not in xr.open_zarr(path, group="volume", consolidated=False)
