"""`faket-dask reconstruct` as a subprocess: outputs open with the readers; bad input exits 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _cli import assert_one_line_exit_2, run_cli

from faket_dask.io import TiltSeries, read_volume, write_mrc, write_tilt_series
from faket_dask.stages.projection import project
from faket_dask.stages.reconstruction import reconstruct

pytestmark = pytest.mark.timeout(180)

ANGLES = np.arange(-45.0, 46.0, 15.0)


def tilts() -> np.ndarray:
    vol = np.zeros((8, 12, 16), np.float32)
    vol[3:5, 4:8, 5:9] = 1.0
    vol[5, 2:10, 11] = 2.0
    return project(torch.from_numpy(vol), ANGLES).numpy()


@pytest.mark.parametrize("ext", [".mrc", ".zarr"])
def test_reconstruct_matches_library(tmp_path: Path, ext: str) -> None:
    data = tilts()
    write_tilt_series(tmp_path / f"ts{ext}", TiltSeries(data, ANGLES, 5.0))
    out = tmp_path / f"tomo{ext}"
    proc = run_cli(
        "reconstruct",
        tmp_path / f"ts{ext}",
        "-o",
        out,
        "--thickness",
        "4",
        "--bin",
        "2",
        "--filter",
        "ramp",
        "--device",
        "cpu",
        "--slab-size",
        "2",
        subprocess_=ext == ".mrc",
    )
    assert proc.returncode == 0, proc.stderr
    assert "tomogram 4x6x8" in proc.stdout
    vol = read_volume(out)
    expected = reconstruct(data, ANGLES, thickness=4, bin=2, filter="ramp").numpy()
    assert vol.data.shape == (4, 6, 8)
    np.testing.assert_allclose(vol.data, expected, atol=1e-6)
    assert vol.pixel_spacing == pytest.approx(10.0)  # binned ×2


def test_reconstruct_angles_option_and_default_filter(tmp_path: Path) -> None:
    data = tilts()
    write_mrc(tmp_path / "ts.mrc", data)  # no .tlt: angles must come from the options
    proc = run_cli(
        "reconstruct",
        tmp_path / "ts.mrc",
        "-o",
        tmp_path / "a.mrc",
        "--thickness",
        "8",
        "--bin",
        "1",
        "--angles",
        "-45:45:15",
        "--device",
        "cpu",
    )
    assert proc.returncode == 0, proc.stderr
    expected = reconstruct(data, ANGLES, thickness=8, filter="approxShrec").numpy()
    np.testing.assert_allclose(read_volume(tmp_path / "a.mrc").data, expected, atol=1e-6)
    (tmp_path / "ts.tlt").write_text("\n".join(f"{a:.2f}" for a in ANGLES) + "\n")
    proc = run_cli(
        "reconstruct",
        tmp_path / "ts.mrc",
        "-o",
        tmp_path / "b.mrc",
        "--thickness",
        "8",
        "--angles-file",
        tmp_path / "ts.tlt",
        "--device",
        "cpu",
    )
    assert proc.returncode == 0, proc.stderr
    assert read_volume(tmp_path / "b.mrc").data.shape == (8, 6, 8)


def test_reconstruct_bad_input_exits_2(tmp_path: Path) -> None:
    assert_one_line_exit_2(
        run_cli(
            "reconstruct",
            tmp_path / "missing.mrc",
            "-o",
            tmp_path / "t.mrc",
            "--thickness",
            "4",
            subprocess_=True,
        ),
        "does not exist",
    )
    write_mrc(tmp_path / "flat.mrc", np.zeros((16, 16), np.float32))
    assert_one_line_exit_2(
        run_cli(
            "reconstruct",
            tmp_path / "flat.mrc",
            "-o",
            tmp_path / "t.mrc",
            "--thickness",
            "4",
            "--angles",
            "0",
        ),
        "3-D",
    )
    write_tilt_series(tmp_path / "ts.mrc", TiltSeries(tilts(), None, None))
    assert_one_line_exit_2(
        run_cli("reconstruct", tmp_path / "ts.mrc", "-o", tmp_path / "t.mrc", "--thickness", "4"),
        "angles",
    )
    assert_one_line_exit_2(
        run_cli(
            "reconstruct",
            tmp_path / "ts.mrc",
            "-o",
            tmp_path / "t.mrc",
            "--thickness",
            "4",
            "--angles",
            "-45:45:15",
            "--filter",
            "hann",
        ),
        "--filter",
    )
    assert_one_line_exit_2(
        run_cli(
            "reconstruct",
            tmp_path / "ts.mrc",
            "-o",
            tmp_path / "t.mrc",
            "--thickness",
            "4",
            "--angles",
            "-30:30:15",
        ),
        "angles",
    )
