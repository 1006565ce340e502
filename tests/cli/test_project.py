"""The ``project`` verb as a subprocess: bad input, and the cluster run equals the local one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _stage_cli import ANGLES, one_error_line, run_cli, write_good

from faket_dask.io import TiltSeries, Volume, read_tilt_series, write_tilt_series, write_volume

pytestmark = pytest.mark.timeout(240)


def test_bad_input_gives_one_line(tmp_path: Path) -> None:
    good = write_good(tmp_path)
    line = one_error_line(
        run_cli(
            "project",
            tmp_path / "none.mrc",
            "-o",
            tmp_path / "o.mrc",
            "--angles",
            ANGLES,
            check=False,
        )
    )
    assert "does not exist" in line

    write_tilt_series(tmp_path / "flat.mrc", TiltSeries(good[0:1], None, 8.0))
    from faket_dask.io import write_mrc

    write_mrc(tmp_path / "img.mrc", good[0])
    line = one_error_line(
        run_cli(
            "project",
            tmp_path / "img.mrc",
            "-o",
            tmp_path / "o.mrc",
            "--angles",
            ANGLES,
            check=False,
        )
    )
    assert "3-D" in line

    line = one_error_line(
        run_cli(
            "project",
            tmp_path / "good.tif",
            "-o",
            tmp_path / "o.mrc",
            "--angles",
            ANGLES,
            check=False,
        )
    )
    assert "unknown extension" in line

    line = one_error_line(
        run_cli(
            "project",
            tmp_path / "good.mrc",
            "-o",
            tmp_path / "o.mrc",
            "--angles",
            "-60:61:2",
            check=False,
        )
    )
    assert "STOP" in line



def test_project_on_a_cluster_equals_single_process(tmp_path: Path, dask_cluster) -> None:
    """Projection per Y-slab on the cluster == the verb in one process."""
    addr = ["--scheduler", dask_cluster.scheduler_address]
    vol = np.random.default_rng(3).random((10, 37, 30)).astype(np.float32)
    write_volume(tmp_path / "vol.zarr", Volume(vol, 6.0))
    proj = ["project", tmp_path / "vol.zarr", "--angles", "-40:40:10", "--device", "cpu"]
    run_cli(*proj, "-o", tmp_path / "nl_local.zarr")
    run_cli(*proj, "-o", tmp_path / "nl_cluster.zarr", *addr, "--rows-per-block", 8)
    local = read_tilt_series(tmp_path / "nl_local.zarr")
    remote = read_tilt_series(tmp_path / "nl_cluster.zarr")
    assert remote.data.shape == (9, 37, 30)
    np.testing.assert_array_equal(remote.data, local.data)
    np.testing.assert_allclose(remote.angles_deg, local.angles_deg)

    # the cluster's store is consolidated like the local one: xarray opens it without a warning
    import warnings

    import xarray as xr

    for name in ("nl_local.zarr", "nl_cluster.zarr"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            xr.open_zarr(tmp_path / name).close()
