"""The ``noise fit`` / ``noise apply`` verbs as subprocesses: bad input, and the cluster run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _stage_cli import ANGLES, one_error_line, run_cli, write_good

from faket_dask.angles import parse_angles
from faket_dask.io import TiltSeries, read_tilt_series, write_tilt_series

pytestmark = pytest.mark.timeout(240)


def test_bad_input_gives_one_line(tmp_path: Path) -> None:
    good = write_good(tmp_path)
    angles = parse_angles(ANGLES)
    const = good.copy()
    const[1] = 3.0
    write_tilt_series(tmp_path / "const.mrc", TiltSeries(const, angles, 8.0))
    line = one_error_line(
        run_cli(
            "noise",
            "fit",
            "--clean",
            tmp_path / "const.mrc",
            "--noisy",
            tmp_path / "good.mrc",
            "-o",
            tmp_path / "n.json",
            check=False,
        )
    )
    assert "constant" in line or "std" in line

    # an existing output is refused and kept
    (tmp_path / "exists.mrc").write_bytes(b"keep me")
    line = one_error_line(
        run_cli(
            "noise",
            "apply",
            tmp_path / "good.mrc",
            "--model",
            tmp_path / "n.json",
            "-o",
            tmp_path / "exists.mrc",
            check=False,
        )
    )
    assert "exists" in line
    assert (tmp_path / "exists.mrc").read_bytes() == b"keep me"


def test_noise_on_a_cluster_equals_single_process(tmp_path: Path, dask_cluster) -> None:
    """Noise per tilt block on the cluster == the verb in one process."""
    from faket_dask.stages.noise import fit_noise_model_from_reference
    from faket_dask.stages.projection import project

    addr = ["--scheduler", dask_cluster.scheduler_address]
    vol = np.random.default_rng(3).random((10, 37, 30)).astype(np.float32)
    angles = parse_angles("-40:40:10")
    tilts = project(torch.from_numpy(vol), angles).numpy()
    write_tilt_series(tmp_path / "nl_local.zarr", TiltSeries(tilts, angles, 6.0), var="noiseless")
    local = read_tilt_series(tmp_path / "nl_local.zarr")

    model = fit_noise_model_from_reference(local.data, local.angles_deg, snr=0.5)
    model.save(tmp_path / "noise.json")
    noise = [
        "noise",
        "apply",
        tmp_path / "nl_local.zarr",
        "--model",
        tmp_path / "noise.json",
        "--seed",
        4,
        "--sample-id",
        2,
        "--device",
        "cpu",
    ]
    run_cli(*noise, "-o", tmp_path / "n_local.zarr", "--content-out", tmp_path / "c_local.zarr")
    run_cli(
        *noise,
        "-o",
        tmp_path / "n_cluster.zarr",
        "--content-out",
        tmp_path / "c_cluster.zarr",
        *addr,
        "--tilts-per-block",
        4,
    )
    for name in ("n", "c"):
        a = read_tilt_series(tmp_path / f"{name}_local.zarr").data
        b = read_tilt_series(tmp_path / f"{name}_cluster.zarr").data
        np.testing.assert_array_equal(b, a)
