"""faket-dask generate / info / export: as a subprocess (the demo) and in-process."""

from __future__ import annotations

import json
import subprocess
import sys

import mrcfile
import numpy as np
import pytest
from _generate_helpers import tiny_config
from faket_dask_cli.main import main

from faket_dask.config import save_config

pytestmark = pytest.mark.timeout(240)


def run_main(capsys, *args):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    code = exit_info.value.code
    return (0 if code is None else code), out, err


def test_demo_then_info_as_subprocesses(tmp_path):
    store = tmp_path / "demo.zarr"
    cmd = [sys.executable, "-m", "faket_dask_cli.main"]
    proc = subprocess.run(
        [*cmd, "generate", "--demo", "--n-samples", "1", "-o", str(store), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM weights" in proc.stderr  # offline here: the loud fallback
    assert "summary" in proc.stderr
    info = subprocess.run(
        [*cmd, "info", str(store), "--json"], capture_output=True, text=True, timeout=60
    )
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["complete"] == data["n_samples"] == 1
    assert data["weights"]["name"] == "random" and data["weights"]["fallback"]
    assert data["config"]["tilts"]["shape"] == [128, 128]
    text = subprocess.run([*cmd, "info", str(store)], capture_output=True, text=True, timeout=60)
    assert "1 of 1 complete" in text.stdout and "FELL BACK" in text.stdout


@pytest.fixture
def cfg_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    save_config(tiny_config(n_samples=2, reconstruction={"enabled": True, "bin": 2}), path)
    return path


def test_generate_export_and_errors(capsys, tmp_path, cfg_file, dask_cluster, monkeypatch):
    store = tmp_path / "t.zarr"
    addr = dask_cluster.scheduler_address
    code, _, err = run_main(capsys, "generate", "-c", cfg_file, "-o", store, "--dry-run")
    assert code == 0 and "per sample" in err and not store.exists()
    code, _, err = run_main(
        capsys, "generate", "-c", cfg_file, "-o", store, "--scheduler", addr, "--no-progress"
    )
    assert code == 0, err
    code, _, err = run_main(capsys, "generate", "-c", cfg_file, "-o", store, "--scheduler", addr)
    assert code == 2 and "pass --resume" in err
    code, _, err = run_main(
        capsys,
        "generate",
        "-c",
        cfg_file,
        "-o",
        store,
        "--scheduler",
        addr,
        "--resume",
        "--n-samples",
        "3",
        "--no-progress",
    )
    assert code == 0 and "2 of 3 samples already complete" in err
    # export: MRC with the voxel size, the .tlt and a STAR of the particles
    out = tmp_path / "s1.mrc"
    code, _, err = run_main(capsys, "export", store, "--sample", 1, "-o", out)
    assert code == 0, err
    with mrcfile.open(out) as m:
        assert m.data.shape == (3, 16, 16) and float(m.voxel_size.x) == pytest.approx(20.0)
    assert np.loadtxt(tmp_path / "s1.tlt").tolist() == [-40.0, 0.0, 40.0]
    assert "rlnCoordinateX" in (tmp_path / "s1.star").read_text()
    code, _, err = run_main(
        capsys,
        "export",
        store,
        "--sample",
        1,
        "--modality",
        "tomogram:class_mask",
        "-o",
        tmp_path / "m.mrc",
    )
    assert code == 0, err
    code, _, err = run_main(capsys, "export", store, "--sample", 9, "-o", tmp_path / "x.mrc")
    assert code == 2 and "not in the store" in err
    # a failing sample: exit 1, the others are written
    monkeypatch.setenv("FAKET_DASK_FAULT", "fail:0")
    code, _, err = run_main(
        capsys,
        "generate",
        "-c",
        cfg_file,
        "-o",
        tmp_path / "f.zarr",
        "--scheduler",
        addr,
        "--no-progress",
    )
    assert code == 1 and "1 of 2 samples failed" in err


def test_cluster_and_input_errors(capsys, tmp_path, cfg_file):
    code, _, err = run_main(capsys, "generate", "--demo", "-c", cfg_file, "-o", tmp_path / "a.zarr")
    assert code == 2 and "not both" in err
    code, _, err = run_main(capsys, "generate", "-o", tmp_path / "a.zarr")
    assert code == 2 and "-c CONFIG" in err
    code, _, err = run_main(
        capsys,
        "generate",
        "-c",
        cfg_file,
        "-o",
        tmp_path / "a.zarr",
        "--scheduler",
        "tcp://127.0.0.1:1",
        "--worker-timeout",
        "2",
    )
    assert code == 3 and "cannot reach the Dask scheduler" in err
    assert len(err.strip().splitlines()) == 1
