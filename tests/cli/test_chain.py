"""The stage verbs chained as subprocesses: project -> noise fit -> noise apply -> style."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from _stage_cli import ANGLES, phantom, reference_like, run_cli

from faket_dask.angles import parse_angles
from faket_dask.io import TiltSeries, Volume, read_tilt_series, write_tilt_series, write_volume

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("ext", [".mrc", ".zarr"])
def test_chain_matches_library(tmp_path: Path, ext: str, one_thread: None) -> None:
    from faket_dask.stages.noise import NoiseModel, fit_noise_model
    from faket_dask.stages.noise_apply import NoiseDraw, apply_noise
    from faket_dask.stages.projection import project
    from faket_dask.stages.style import StyleRun, style_transfer
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
    both = NoiseDraw(modalities=("noisy", "content"))
    lib = apply_noise(torch.from_numpy(noiseless.data), lib_model, angles, seed=3, options=both)
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
        StyleRun(batch_size=2),
    )
    assert styled.data.tobytes() == lib_styled.numpy().tobytes()
    # FakET matches every output tilt's std, then mean, to the raw style tilt
    np.testing.assert_allclose(styled.data.mean(axis=(1, 2)), ref.mean(axis=(1, 2)), atol=1e-4)
    assert not np.array_equal(styled.data, noisy.data)

    if ext == ".zarr":
        ds = xr.open_zarr(tmp_path / "faket.zarr")
        assert ds["styled"].dims == ("tilt", "y", "x")
        np.testing.assert_allclose(ds["tilt_angle"].values, angles)
