"""`faket-dask reference prepare | from-tomogram | synth` as subprocesses."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _cli import assert_one_line_exit_2, run_cli

from faket_dask.io import (
    TiltSeries,
    Volume,
    read_tilt_series,
    write_mrc,
    write_volume,
)
from faket_dask.stages.reference import from_tomogram, prepare_reference

pytestmark = pytest.mark.timeout(180)

MDOC = """PixelSpacing = 4.0
[T =     Tilt axis angle = 30.0, binning = 1]

[ZValue = 0]
TiltAngle = 0.0

[ZValue = 1]
TiltAngle = 15.0

[ZValue = 2]
TiltAngle = -15.0
"""


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_synth_writes_a_labelled_stand_in(tmp_path: Path) -> None:
    out = tmp_path / "ref.mrc"
    stdout = _ok(
        run_cli(
            "reference",
            "synth",
            "-o",
            out,
            "--shape",
            "3",
            "32",
            "40",
            "--angles",
            "-20:20:20",
            "--pixel-spacing",
            "8",
            "--seed",
            "5",
            subprocess_=True,
        )
    )
    assert "stand-in" in stdout
    series = read_tilt_series(out)
    assert series.data.shape == (3, 32, 40)
    np.testing.assert_allclose(series.angles_deg, [-20, 0, 20])
    assert series.pixel_spacing == pytest.approx(8.0)
    record = json.loads((tmp_path / "ref.synth.json").read_text())
    assert record["stand_in"] is True and "stand-in" in record["note"]
    assert record["seed"] == 5 and record["shape"] == [3, 32, 40]
    # H W only (T from the angles), to Zarr, with the compact spelling (another stem: ref.zarr
    # would write ref.synth.json again, which is refused without --overwrite)
    _ok(
        run_cli(
            "reference",
            "synth",
            "-o",
            tmp_path / "ref2.zarr",
            "--shape",
            "24x24",
            "--angles=-10:10:10",
            "--phantom",
            "carbon",
        )
    )
    assert read_tilt_series(tmp_path / "ref2.zarr").data.shape == (3, 24, 24)


def test_synth_bad_shape_exits_2(tmp_path: Path) -> None:
    assert_one_line_exit_2(
        run_cli(
            "reference",
            "synth",
            "-o",
            tmp_path / "r.mrc",
            "--shape",
            "4",
            "32",
            "32",
            "--angles",
            "-20:20:20",
        ),
        "tilts",
    )
    assert_one_line_exit_2(
        run_cli("reference", "synth", "-o", tmp_path / "r.mrc", "--shape", "32"), "--shape"
    )


def test_prepare_with_mdoc(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(3, 40, 48)).astype(np.float32)
    write_mrc(tmp_path / "raw.st", data)
    (tmp_path / "raw.st.mdoc").write_text(MDOC)
    out = tmp_path / "prep.mrc"
    _ok(
        run_cli(
            "reference",
            "prepare",
            tmp_path / "raw.st",
            "-o",
            out,
            "--pixel-spacing",
            "8",
            "--mdoc",
            tmp_path / "raw.st.mdoc",
            "--crop",
            "16",
            "18",
            "--device",
            "cpu",
        )
    )
    got = read_tilt_series(out)
    expected = prepare_reference(
        TiltSeries(data, np.array([0.0, 15.0, -15.0]), 4.0), None, 8.0, 30.0, (16, 18)
    )
    assert got.data.shape == (3, 16, 18)
    np.testing.assert_allclose(got.angles_deg, [-15.0, 0.0, 15.0])
    assert got.pixel_spacing == pytest.approx(8.0)
    np.testing.assert_allclose(got.data, expected.data, atol=1e-5)


def test_prepare_bad_input_exits_2(tmp_path: Path) -> None:
    assert_one_line_exit_2(
        run_cli(
            "reference",
            "prepare",
            tmp_path / "none.mrc",
            "-o",
            tmp_path / "p.mrc",
            "--pixel-spacing",
            "8",
        ),
        "does not exist",
    )
    write_mrc(tmp_path / "flat.mrc", np.zeros((16, 16), np.float32), 4.0)
    assert_one_line_exit_2(
        run_cli(
            "reference",
            "prepare",
            tmp_path / "flat.mrc",
            "-o",
            tmp_path / "p.mrc",
            "--pixel-spacing",
            "8",
        ),
        "3-D",
    )
    write_mrc(tmp_path / "ts.mrc", np.zeros((3, 16, 16), np.float32))
    assert_one_line_exit_2(
        run_cli(
            "reference",
            "prepare",
            tmp_path / "ts.mrc",
            "-o",
            tmp_path / "p.mrc",
            "--pixel-spacing",
            "8",
            "--angles-file",
            tmp_path / "none.tlt",
        ),
        "does not exist",
    )


def test_from_tomogram(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    tomo = rng.normal(size=(6, 10, 14)).astype(np.float32)
    write_volume(tmp_path / "tomo.mrc", Volume(tomo, 12.0))
    out = tmp_path / "ref.zarr"
    _ok(
        run_cli(
            "reference",
            "from-tomogram",
            tmp_path / "tomo.mrc",
            "-o",
            out,
            "--angles",
            "-30:30:30",
            "--device",
            "cpu",
        )
    )
    got = read_tilt_series(out)
    expected = from_tomogram(tomo, [-30.0, 0.0, 30.0], pixel_spacing=12.0)
    np.testing.assert_allclose(got.data, expected.data, atol=1e-5)
    np.testing.assert_allclose(got.angles_deg, [-30, 0, 30])
    assert got.pixel_spacing == pytest.approx(12.0)


def test_from_tomogram_bad_input_exits_2(tmp_path: Path) -> None:
    write_mrc(tmp_path / "flat.mrc", np.zeros((16, 16), np.float32))
    assert_one_line_exit_2(
        run_cli(
            "reference",
            "from-tomogram",
            tmp_path / "flat.mrc",
            "-o",
            tmp_path / "r.mrc",
            "--angles",
            "0",
            subprocess_=True,
        ),
        "3-D",
    )
    assert_one_line_exit_2(
        run_cli(
            "reference",
            "from-tomogram",
            tmp_path / "none.mrc",
            "-o",
            tmp_path / "r.mrc",
            "--angles",
            "0",
        ),
        "does not exist",
    )
    assert_one_line_exit_2(
        run_cli("reference", "from-tomogram", tmp_path / "flat.mrc", "-o", tmp_path / "r.mrc"),
        "angles",
    )
