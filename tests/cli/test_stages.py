"""The stage verbs as subprocesses: project -> noise fit -> noise apply -> style, MRC and Zarr."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from _cli import run_cli_checked

from faket_dask.angles import parse_angles
from faket_dask.io import TiltSeries, Volume, read_tilt_series, write_tilt_series, write_volume

pytestmark = pytest.mark.timeout(240)

ANGLES = "-30:30:15"


def run_cli(*args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    # CPU results are reproducible for a fixed thread count: pin it on both sides
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return run_cli_checked(*args, check=check, env=env, timeout=180)


def phantom() -> np.ndarray:
    rng = np.random.default_rng(7)
    vol = np.zeros((8, 20, 24), np.float32)
    for _ in range(6):
        z, y, x = rng.integers(2, 6), rng.integers(3, 17), rng.integers(4, 20)
        vol[z - 1 : z + 2, y - 2 : y + 2, x - 2 : x + 3] += rng.uniform(0.5, 2.0)
    return vol


def reference_like(noiseless: np.ndarray) -> np.ndarray:
    """A stand-in 'real' series of the same sample: blurred signal plus strong noise."""
    rng = np.random.default_rng(11)
    return (0.3 * noiseless + rng.normal(0, 1.0, noiseless.shape) + 5.0).astype(np.float32)


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("ext", [".mrc", ".zarr"])
def test_chain_matches_library(tmp_path: Path, ext: str, one_thread: None) -> None:
    from faket_dask.stages.noise import NoiseModel, apply_noise, fit_noise_model
    from faket_dask.stages.projection import project
    from faket_dask.stages.style import style_transfer
    from faket_dask.stages.style.weights import load_vgg19

    angles = parse_angles(ANGLES)
    vol = phantom()
    write_volume(tmp_path / f"vol{ext}", Volume(vol, 8.0))

    run_cli(
        "project",
        tmp_path / f"vol{ext}",
        "-o",
        tmp_path / f"nl{ext}",
        "--angles",
        ANGLES,
        "--device",
        "cpu",
    )
    noiseless = read_tilt_series(tmp_path / f"nl{ext}")
    expected = project(torch.from_numpy(vol), angles).numpy()
    assert noiseless.data.tobytes() == expected.tobytes()
    np.testing.assert_allclose(noiseless.angles_deg, angles)
    assert noiseless.pixel_spacing == pytest.approx(8.0)

    ref = reference_like(noiseless.data)
    write_tilt_series(tmp_path / f"ref{ext}", TiltSeries(ref, angles, 8.0))
    run_cli(
        "noise",
        "fit",
        "--clean",
        tmp_path / f"nl{ext}",
        "--noisy",
        tmp_path / f"ref{ext}",
        "-o",
        tmp_path / "noise.json",
    )
    model = NoiseModel.load(tmp_path / "noise.json")
    lib_model = fit_noise_model([(noiseless.data, ref)], angles, degree=2)
    for baseline in (False, True):
        for got, want in zip(
            model.curves(angles, baseline), lib_model.curves(angles, baseline), strict=True
        ):
            np.testing.assert_array_equal(got, want)

    run_cli(
        "noise",
        "apply",
        tmp_path / f"nl{ext}",
        "--model",
        tmp_path / "noise.json",
        "-o",
        tmp_path / f"noisy{ext}",
        "--content-out",
        tmp_path / f"content{ext}",
        "--seed",
        3,
        "--device",
        "cpu",
    )
    noisy = read_tilt_series(tmp_path / f"noisy{ext}")
    content = read_tilt_series(tmp_path / f"content{ext}")
    lib = apply_noise(
        torch.from_numpy(noiseless.data), lib_model, angles, seed=3, modalities=("noisy", "content")
    )
    assert noisy.data.tobytes() == lib["noisy"].numpy().tobytes()
    assert content.data.tobytes() == lib["content"].numpy().tobytes()

    run_cli(
        "style",
        tmp_path / f"content{ext}",
        "--style",
        tmp_path / f"ref{ext}",
        "--init",
        tmp_path / f"noisy{ext}",
        "-o",
        tmp_path / f"faket{ext}",
        "--weights",
        "random",
        "--seed",
        1,
        "--device",
        "cpu",
        "--batch",
        2,
    )
    styled = read_tilt_series(tmp_path / f"faket{ext}")
    model_vgg, _ = load_vgg19("random", seed=1, device="cpu")
    lib_styled = style_transfer(
        torch.from_numpy(content.data),
        torch.from_numpy(ref),
        torch.from_numpy(noisy.data),
        model_vgg,
        batch_size=2,
    )
    assert styled.data.tobytes() == lib_styled.numpy().tobytes()
    # FakET matches every output tilt's std, then mean, to the raw style tilt
    np.testing.assert_allclose(styled.data.mean(axis=(1, 2)), ref.mean(axis=(1, 2)), atol=1e-4)
    assert not np.array_equal(styled.data, noisy.data)

    if ext == ".zarr":
        ds = xr.open_zarr(tmp_path / "faket.zarr")
        assert ds["styled"].dims == ("tilt", "y", "x")
        np.testing.assert_allclose(ds["tilt_angle"].values, angles)


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_bad_input_gives_one_line(tmp_path: Path) -> None:
    angles = parse_angles(ANGLES)
    good = np.random.default_rng(0).normal(size=(5, 20, 24)).astype(np.float32)
    write_tilt_series(tmp_path / "good.mrc", TiltSeries(good, angles, 8.0))

    line = _one_error_line(
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
    line = _one_error_line(
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

    nan = good.copy()
    nan[2, 3, 4] = np.nan
    write_tilt_series(tmp_path / "nan.mrc", TiltSeries(nan, angles, 8.0))
    line = _one_error_line(
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
    line = _one_error_line(
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

    const = good.copy()
    const[1] = 3.0
    write_tilt_series(tmp_path / "const.mrc", TiltSeries(const, angles, 8.0))
    line = _one_error_line(
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

    line = _one_error_line(
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

    line = _one_error_line(
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

    # an existing output is refused and kept
    (tmp_path / "exists.mrc").write_bytes(b"keep me")
    line = _one_error_line(
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


def test_weights_info_reports_the_cache(tmp_path: Path) -> None:
    proc = run_cli("weights", "info", "--cache-dir", tmp_path)
    info = json.loads(proc.stdout)
    assert str(tmp_path) in json.dumps(info)


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
    assert "needs Zarr" in _one_error_line(proc)


def test_project_and_noise_on_a_cluster_equal_single_process(tmp_path: Path, dask_cluster) -> None:
    """Projection per Y-slab and noise per tilt block on the cluster == the verbs in one process."""
    from faket_dask.stages.noise import fit_noise_model_from_reference

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
