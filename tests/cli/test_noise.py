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


@pytest.mark.timeout(480)  # three CLI runs and a cluster on a shared machine
def test_calibrated_noise_on_a_cluster_equals_single_process(
    tmp_path: Path, dask_cluster
) -> None:
    """`noise apply --model micro.json` (the calibrated model): cluster blocks == one process.

    The calibration is of a synth microscope (as `reference calibrate` writes it); the
    one-process verb is checked against the stage called here, and each tilt against the
    calibration's mean and std at its angle.
    """
    from _microscopes import synth

    from faket_dask.stages.calibrated_noise import apply_calibrated_noise
    from faket_dask.stages.calibration import calibrate
    from faket_dask.stages.projection import project

    ref, _ = synth("df3", seed=5, size=96, angles=np.arange(-40.0, 41.0, 10.0))
    cal = calibrate(ref.data, ref.angles_deg, 6.0)
    cal.save(tmp_path / "micro.json")

    vol = np.random.default_rng(3).random((10, 40, 36)).astype(np.float32)
    angles = parse_angles("-35:45:10")  # between and beyond the reference's tilts
    tilts = project(torch.from_numpy(vol), angles).numpy()
    write_tilt_series(tmp_path / "nl.zarr", TiltSeries(tilts, angles, 6.0), var="noiseless")
    noise = ["noise", "apply", tmp_path / "nl.zarr", "--model", tmp_path / "micro.json"]
    noise += ["--seed", 4, "--sample-id", 2, "--device", "cpu"]
    on_cluster = ["--scheduler", dask_cluster.scheduler_address, "--tilts-per-block", 3]
    for where, extra in (("local", []), ("cluster", on_cluster)):
        run_cli(
            *noise,
            "-o",
            tmp_path / f"n_{where}.zarr",
            "--content-out",
            tmp_path / f"c_{where}.zarr",
            *extra,
        )
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # as the verbs run (OMP_NUM_THREADS=1)
    try:
        want = apply_calibrated_noise(torch.from_numpy(tilts), cal, angles, 4, 2)
    finally:
        torch.set_num_threads(n)
    for name, modality in (("n", "noisy"), ("c", "content")):
        local = read_tilt_series(tmp_path / f"{name}_local.zarr").data
        cluster = read_tilt_series(tmp_path / f"{name}_cluster.zarr").data
        np.testing.assert_array_equal(cluster, local)
        np.testing.assert_allclose(local, want[modality].numpy(), rtol=0, atol=1e-4)
        for t, a in enumerate(angles):
            i, j, w = cal.interpolation(float(a))
            mean = (1 - w) * cal.tilts[i].mean + w * cal.tilts[j].mean
            std = (1 - w) * cal.tilts[i].std + w * cal.tilts[j].std
            assert abs(local[t].mean() - mean) < 1e-3 * abs(mean)
            assert abs(local[t].std() - std) < 1e-3 * std
    # the noise differs from the noiseless input's shape: not a copy, not a rescale
    assert abs(np.corrcoef(local[4].ravel(), tilts[4].ravel())[0, 1]) < 0.99

    line = one_error_line(
        run_cli(*noise, "-o", tmp_path / "f.zarr", "--rng", "faket", check=False)
    )
    assert "keyed" in line
