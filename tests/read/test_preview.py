"""Preview and report pictures of a tiny store, and the preview/report/split commands."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from _tiny_store import make_store
from faket_dask_cli.main import app
from PIL import Image
from typer.testing import CliRunner

from faket_dask.read import preview as pv

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("preview"), n=2)


def test_tilt_indices_pick_lowest_zero_highest():
    assert pv.tilt_indices([-60, -3, 2, 60]) == [0, 2, 3]
    assert pv.tilt_indices([10, -20, 0]) == [1, 2, 0]


def test_preview_png_has_the_expected_size_and_draws_every_panel(store, tmp_path):
    out = pv.preview(store, 1, tmp_path / "p.png", dpi=50)
    with Image.open(out) as im:
        # 4 modalities + reference + labels + spectra + tomogram = 8 columns
        assert im.size == (round((2.1 * 8 + 0.8) * 50), round(6.6 * 50))
        px = np.asarray(im.convert("L"), dtype=np.float64)
    assert px.std() > 20  # not blank


def test_reference_is_the_recorded_one_and_regenerated_when_gone(store, tmp_path):
    from faket_dask.io import read_tilt_series
    from faket_dask.io import store as st

    data, angles = pv.load_reference(store, 0)
    rec = st.read_store_attrs(store)["style_references"][0]
    series = read_tilt_series(rec["path"])
    np.testing.assert_array_equal(data, series.data)
    copy = tmp_path / "c.zarr"
    shutil.copytree(store, copy)
    shutil.rmtree(copy / "inputs" / "demo_reference")
    # the copy records the original path: point it at the deleted copy's inputs
    st.update_store_attrs(
        copy, style_references=[{**rec, "path": str(copy / "inputs/demo_reference")}]
    )
    again, again_angles = pv.load_reference(copy, 0)
    np.testing.assert_array_equal(again, data)
    np.testing.assert_array_equal(again_angles, angles)


def test_cli_preview_report_split(store, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli.png"
    res = runner.invoke(
        app, ["preview", str(store), "--sample", "0", "-o", str(out), "--dpi", "30"]
    )
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 1000
    res = runner.invoke(app, ["preview", str(store), "-o", str(out)])
    assert res.exit_code != 0 and "exists" in str(res.exception or res.output)
    res = runner.invoke(app, ["report", str(store), "-o", str(tmp_path / "r.html"), "--dpi", "30"])
    assert res.exit_code == 0, res.output
    copy = tmp_path / "s.zarr"
    shutil.copytree(store, copy)
    res = runner.invoke(app, ["split", str(copy), "--fractions", "0.5", "0.5", "0", "--seed", "2"])
    assert res.exit_code == 0, res.output
    from faket_dask.read.access import assign_splits, open_dataset

    assert open_dataset(copy).splits["ids"] == assign_splits([0, 1], (0.5, 0.5, 0), 2)
