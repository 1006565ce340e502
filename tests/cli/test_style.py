"""The ``style`` verb as a subprocess: bad input, and the cluster run equals the local one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _stage_cli import ANGLES, one_error_line, run_cli, write_good

from faket_dask.angles import parse_angles
from faket_dask.io import TiltSeries, read_tilt_series, write_tilt_series

pytestmark = pytest.mark.timeout(240)


def test_bad_input_gives_one_line(tmp_path: Path) -> None:
    good = write_good(tmp_path)
    angles = parse_angles(ANGLES)
    nan = good.copy()
    nan[2, 3, 4] = np.nan
    write_tilt_series(tmp_path / "nan.mrc", TiltSeries(nan, angles, 8.0))
    line = one_error_line(
        run_cli(
            "style",
            tmp_path / "nan.mrc",
            "--style",
            tmp_path / "good.mrc",
            "--init",
            tmp_path / "good.mrc",
            "-o",
            tmp_path / "o.mrc",
            "--weights",
            "random",
            check=False,
        )
    )
    assert "NaN" in line or "finite" in line

    write_tilt_series(tmp_path / "four.mrc", TiltSeries(good[:4], angles[:4], 8.0))
    line = one_error_line(
        run_cli(
            "style",
            tmp_path / "good.mrc",
            "--style",
            tmp_path / "four.mrc",
            "--init",
            tmp_path / "good.mrc",
            "-o",
            tmp_path / "o.mrc",
            "--weights",
            "random",
            check=False,
        )
    )
    assert "tilt counts differ" in line


def test_style_on_a_cluster_equals_single_process(tmp_path: Path, dask_cluster) -> None:
    """16 tilts styled as a Dask graph over tilt blocks == the same verb in one process."""
    rng = np.random.default_rng(5)
    angles = parse_angles("-45:45:6")
    stacks = {
        name: TiltSeries(rng.normal(size=(16, 32, 32)).astype(np.float32), angles, 8.0)
        for name in ("content", "style", "init")
    }
    for name, series in stacks.items():
        write_tilt_series(tmp_path / f"{name}.zarr", series, var=name)
    common = [
        "--style",
        tmp_path / "style.zarr",
        "--init",
        tmp_path / "init.zarr",
        "--weights",
        "random",
        "--seed",
        2,
        "--device",
        "cpu",
        "--batch",
        2,
    ]
    run_cli("style", tmp_path / "content.zarr", *common, "-o", tmp_path / "local.zarr")
    run_cli(
        "style",
        tmp_path / "content.zarr",
        *common,
        "-o",
        tmp_path / "cluster.zarr",
        "--scheduler",
        dask_cluster.scheduler_address,
        "--tilts-per-block",
        4,
    )
    local = read_tilt_series(tmp_path / "local.zarr").data
    distributed = read_tilt_series(tmp_path / "cluster.zarr", var="styled").data
    assert distributed.shape == local.shape == (16, 32, 32)
    np.testing.assert_array_equal(distributed, local)


def test_style_on_a_cluster_needs_zarr(tmp_path: Path) -> None:
    proc = run_cli(
        "style",
        tmp_path / "c.mrc",
        "--style",
        tmp_path / "s.mrc",
        "--init",
        tmp_path / "i.mrc",
        "-o",
        tmp_path / "o.mrc",
        "--scheduler",
        "tcp://127.0.0.1:1",
        check=False,
    )
    assert "needs Zarr" in one_error_line(proc)
