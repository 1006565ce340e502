"""A tilt-series styled as a Dask array graph equals the single-process result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

from faket_dask.dist.series_graph import style_zarr
from faket_dask.io import TiltSeries, write_tilt_series
from faket_dask.options import StyleOptions

pytestmark = pytest.mark.timeout(120)


def test_style_graph_equals_single_process(tmp_path, dask_client):
    from faket_dask.stages.style import StyleRun, style_transfer
    from faket_dask.stages.style.weights import load_vgg19

    rng = np.random.default_rng(0)
    angles = np.linspace(-45, 45, 16)
    stacks = {
        "content": rng.normal(size=(16, 24, 20)).astype("f4"),
        "style": (rng.normal(size=(16, 20, 24)) * 3 + 1).astype("f4"),
        "init": rng.normal(size=(16, 24, 20)).astype("f4") * 2,
    }
    paths = {}
    for name, data in stacks.items():
        paths[name] = tmp_path / f"{name}.zarr"
        write_tilt_series(paths[name], TiltSeries(data, angles, 10.0))
    out = tmp_path / "styled.zarr"
    opts = StyleOptions(
        paths["content"],
        paths["style"],
        paths["init"],
        out,
        weights="random",
        weights_seed=3,
        batch_size=2,
        tilts_per_block=4,
        device="cpu",
    )
    result = style_zarr(opts, dask_client)
    assert result["n_blocks"] == 4
    # the global ranges were computed first, over the whole stacks
    assert result["ranges"]["style"] == (float(stacks["style"].min()), float(stacks["style"].max()))

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # like the workers: bitwise-reproducible CPU kernels
    try:
        model, _ = load_vgg19("random", seed=3)
        expected = style_transfer(
            *(torch.from_numpy(stacks[k]) for k in ("content", "style", "init")),
            model,
            StyleRun(batch_size=2),
        ).numpy()
    finally:
        torch.set_num_threads(n)
    ds = xr.open_zarr(out, consolidated=False)
    np.testing.assert_array_equal(ds.styled.values, expected)
    np.testing.assert_allclose(ds.tilt_angle.values, angles)
    # viewer-ready: the output group describes its array for OME-Zarr readers
    from faket_dask.io.ome import validate_ome

    group_attrs = dict(zarr.open_group(str(out), mode="r").attrs)
    assert validate_ome(group_attrs) == []
    (image,) = group_attrs["ome"]["multiscales"]
    assert image["datasets"][0]["path"] == "styled"
    assert image["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 10.0, 10.0]
