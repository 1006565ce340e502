"""``faket-dask sample build``: as a subprocess and through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile
import xarray as xr
import yaml
from _cli import run_cli_checked as run_cli
from faket_dask_cli.main import app
from typer.testing import CliRunner

from faket_dask.io.store import read_particles

pytestmark = pytest.mark.timeout(180)

CONFIG = {
    "seed": 5,
    "tilts": {"shape": [48, 40], "pixel_spacing": 10.0},
    "sample": {
        "thickness": 24,
        "particles": [
            {"name": "ball", "template": "builtin:sphere", "count": 6},
            {"name": "rod", "template": "builtin:rod:0.5", "count": 4},
        ],
        "membranes": {"vesicles": 1, "vesicle_radius": [60, 80]},
        "fiducials": {"count": 1, "radius": 25},
        "solvent": 0.2,
    },
    "reconstruction": {"bin": 2},
}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def root_attrs(store: Path) -> dict:
    return json.loads((store / "zarr.json").read_text())["attributes"]["faket_dask"]


def test_build_subprocess_with_exports(tmp_path, config_file):
    out = tmp_path / "sample.zarr"
    star, csv, shrec = tmp_path / "p.star", tmp_path / "p.csv", tmp_path / "particle_locations.txt"
    proc = run_cli(
        "sample",
        "build",
        "-c",
        config_file,
        "-o",
        out,
        "--export-star",
        star,
        "--export-csv",
        csv,
        "--export-shrec",
        shrec,
    )
    assert "10 particles" in proc.stdout
    vol = xr.open_zarr(out, group="volume")
    assert vol.sizes == {"z": 24, "y": 48, "x": 40}
    assert vol.attrs["pixel_spacing"] == 10.0
    assert vol["class_mask"].dtype == np.uint8 and vol["instance_mask"].dtype == np.uint32
    assert vol["density"].dtype == np.float32
    np.testing.assert_allclose(vol["x"].values, np.arange(40) * 10.0)
    inst = vol["instance_mask"].values
    table = read_particles(out)
    assert len(table) == 12  # 10 particles, 1 vesicle, 1 bead
    np.testing.assert_array_equal(np.bincount(inst.ravel(), minlength=13)[1:], table["voxels"])
    assert dict(table["class_name"].value_counts()) == {
        "ball": 6,
        "rod": 4,
        "membrane": 1,
        "fiducial": 1,
    }
    assert xr.open_zarr(out, group="particles").sizes["particle"] == 12
    attrs = root_attrs(out)
    assert attrs["seed"] == 5 and attrs["sample_id"] == 0
    assert set(attrs["checksums"]) >= {"density", "class_mask", "instance_mask"}
    # the exports
    blocks = starfile.read(star, always_dict=True)
    parts = blocks["particles"]
    assert len(parts) == 10
    np.testing.assert_allclose(parts["rlnCoordinateX"], table["x"][:10])
    assert pd.read_csv(csv).shape[0] == 12
    assert len(shrec.read_text().splitlines()) == 12


def test_same_seed_same_checksums_other_seed_differs(tmp_path, config_file):
    runner = CliRunner()
    outs = {}
    for name, extra in (("a", []), ("b", []), ("c", ["--seed", "6"]), ("d", ["--sample-id", "1"])):
        out = tmp_path / f"{name}.zarr"
        result = runner.invoke(
            app, ["sample", "build", "-c", str(config_file), "-o", str(out), *extra]
        )
        assert result.exit_code == 0, result.output
        outs[name] = root_attrs(out)["checksums"]
    assert outs["a"] == outs["b"]
    assert outs["a"]["instance_mask"] != outs["c"]["instance_mask"]
    assert outs["a"]["density"] != outs["d"]["density"]


def test_star_frames(tmp_path, config_file):
    out = tmp_path / "s.zarr"
    star = tmp_path / "r5.star"
    run_cli(
        "sample",
        "build",
        "-c",
        config_file,
        "-o",
        out,
        "--export-star",
        star,
        "--star-frame",
        "relion5",
        "--no-density",
    )
    parts = starfile.read(star, always_dict=True)["particles"]
    table = read_particles(out)[:10]
    np.testing.assert_allclose(parts["rlnCenteredCoordinateXAngst"], (table["x"] - 20) * 10.0)
    np.testing.assert_allclose(parts["rlnCenteredCoordinateZAngst"], (table["z"] - 12) * 10.0)
    assert "density" not in xr.open_zarr(out, group="volume")
    binned = tmp_path / "bin.star"
    run_cli(
        "sample",
        "build",
        "-c",
        config_file,
        "-o",
        out,
        "--overwrite",
        "--export-star",
        binned,
        "--star-frame",
        "tomogram",
    )
    parts = starfile.read(binned, always_dict=True)["particles"]
    np.testing.assert_allclose(parts["rlnCoordinateY"], (table["y"] + 0.5) / 2 - 0.5)


def test_errors_are_one_line_exit_2(tmp_path, config_file):
    out = tmp_path / "s.zarr"
    run_cli("sample", "build", "-c", config_file, "-o", out)
    again = run_cli("sample", "build", "-c", config_file, "-o", out, check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert "Traceback" not in again.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"sample": {"particles": [{"name": "x", "template": "t.mrc"}]}}))
    proc = run_cli("sample", "build", "-c", bad, "-o", tmp_path / "t.zarr", check=False)
    assert proc.returncode == 2 and "count" in proc.stderr
    missing = tmp_path / "missing.yaml"
    cfg = {"sample": {"particles": [{"name": "x", "template": "nope.mrc", "count": 1}]}}
    missing.write_text(yaml.safe_dump(cfg))
    proc = run_cli("sample", "build", "-c", missing, "-o", tmp_path / "m.zarr", check=False)
    assert proc.returncode == 2 and "nope.mrc" in proc.stderr and "'x'" in proc.stderr
    proc = run_cli(
        "sample",
        "build",
        "-c",
        config_file,
        "-o",
        tmp_path / "f.zarr",
        "--star-frame",
        "nowhere",
        check=False,
    )
    assert proc.returncode == 2 and "star-frame" in proc.stderr


def test_template_paths_relative_to_the_config(tmp_path):
    from faket_dask.io.mrc import write_mrc

    folder = tmp_path / "cfg"
    folder.mkdir()
    ax = np.arange(15) - 7
    ball = ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + ax[None, None, :] ** 2 <= 16
    write_mrc(folder / "ball.mrc", ball.astype(np.float32), voxel_size=5.0)
    cfg = dict(
        CONFIG,
        sample={"thickness": 24, "particles": [{"name": "m", "template": "ball.mrc", "count": 3}]},
    )
    (folder / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "rel.zarr"
    run_cli("sample", "build", "-c", folder / "c.yaml", "-o", out)
    assert (read_particles(out)["class_name"] == "m").sum() == 3
