"""Every output of a command (siblings included) is checked before any is written."""

from __future__ import annotations

import mrcfile
import numpy as np
from _cli import assert_one_line_exit_2, run_cli_checked


def _volume(path):
    with mrcfile.new(path) as m:
        m.set_data(np.zeros((8, 16, 16), np.float32))
        m.voxel_size = 10.0
    return path


def test_an_existing_sibling_tlt_or_zarr_is_refused_before_any_write(tmp_path):
    vol = _volume(tmp_path / "vol.mrc")
    (tmp_path / "out.tlt").write_text("keep me\n")
    proc = run_cli_checked(
        "project", vol, "-o", tmp_path / "out.mrc", "--angles", "-30:30:30", check=False
    )
    assert_one_line_exit_2(proc, "out.tlt exists")
    assert not (tmp_path / "out.mrc").exists()
    assert (tmp_path / "out.tlt").read_text() == "keep me\n"
    (tmp_path / "out.zarr").mkdir()
    (tmp_path / "out.zarr" / "zarr.json").write_text("{}")
    proc = run_cli_checked(
        "project", vol, "-o", tmp_path / "out.zarr", "--angles", "-30:30:30", check=False
    )
    assert_one_line_exit_2(proc, "out.zarr exists")
    synth = tmp_path / "ref.mrc"
    synth.with_suffix(".synth.json").write_text("{}")
    proc = run_cli_checked("reference", "synth", "-o", synth, "--shape", "16", "16", check=False)
    assert_one_line_exit_2(proc, "ref.synth.json exists")
    assert not synth.exists()
