"""The benchmark scripts still run: the GPU session's script, smoke-sized, on the CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_session_script_phase_1_runs_the_gpu_tests_and_the_suite(tmp_path):
    env = {
        **os.environ,
        "OUT": str(tmp_path),
        "PYTHON": sys.executable,
        "FAKET_DASK_GPU_SESSION_SMOKE": "1",
        "FAKET_DASK_COMMIT": "test",
    }
    run = subprocess.run(
        ["bash", "benchmarks/gpu_session.sh", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    tests_log = (tmp_path / "gpu-tests.log").read_text()
    assert "deselected" in tests_log and "error" not in tests_log.lower()
    result = json.loads((tmp_path / "tiny.json").read_text())
    assert result["suite"] == "tiny"
    (case,) = result["cases"]
    assert set(case["stages"]) == {"build", "project", "noise", "style", "reconstruct", "write"}
    assert case["style_tilts_per_s"] > 0 and case["samples_per_hour"] > 0
    assert result["environment"]["torch"] and result["environment"]["device"]
    bad = subprocess.run(["bash", "benchmarks/gpu_session.sh", "9"], cwd=ROOT, env=env)
    assert bad.returncode == 2


def test_store_scale_benchmark_runs(tmp_path):
    out = tmp_path / "scale.json"
    run = subprocess.run(
        [sys.executable, "benchmarks/bench_store_scale.py", "--sizes", "20", "40", "--gib", "0.01",
         "--json", str(out), "--dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [c["n_samples"] for c in result["cases"]] == [20, 40]
    assert result["growth_of_n"] == 2.0 and set(result["growth"]) == {
        "plan_resume_s", "info_s", "verify_s", "open_one_sample_s"
    }
    rate = result["verify_rate"]
    assert rate["array_gib"] > 0 and rate["gib_per_s"] > 0
    assert list(tmp_path.glob("faket-scale-*")) == []  # its scratch folder is removed


def test_sample_and_rotation_benchmarks_run(tmp_path):
    out = tmp_path / "sample.json"
    run = subprocess.run(
        [sys.executable, "benchmarks/bench_sample.py", "--shape", "48", "192", "192", "--tilts",
         "3", "--slab", "40", "--occupancy", "0.05", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    for key in ("layout_s", "render_s", "project_s", "wall_s", "peak_rss_gib"):
        assert result[key] >= 0  # the keys runs are compared by
    assert result["layout_cpu_s"] >= 0 and result["render_cpu_s"] >= 0
    assert result["objects"] > 0 and 0 < result["labeled_fraction"] < 1
    out = tmp_path / "rotation.json"
    run = subprocess.run(
        [sys.executable, "benchmarks/bench_rotation.py", "--n", "12", "--rounds", "1", "--json",
         str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["n"] == 12 and result["voxels"] > 0  # and the voxels of both paths were equal
    assert len(result["host_s"]) == len(result["batched_s"]) == 1
