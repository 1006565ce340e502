"""Absurd sizes and broken inputs are refused up front: one line, exit 2, no work, no OOM.

Each case runs the real CLI as a subprocess under an address-space cap (``RLIMIT_AS``), so a
case that started the work (a 1.8e9-angle array, a 200000^2 detector) would die of memory
instead of passing. The CPU time the child used is measured with ``wait4`` (the shared machine's
load does not inflate it) and must stay under 30 s: refused before any work (imports take 3-6 s).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import yaml
from _cli import CLI
from _generate_helpers import tiny_dict

pytestmark = pytest.mark.timeout(300)

MEMORY_CAP = 3 * 2**30  # bytes of address space: imports fit, the absurd work does not


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def _cfg(d: Path, **over: object) -> str:
    path = d / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_dict(**over), sort_keys=False))
    return str(path)


def _gen(d: Path, *extra: str, **over: object) -> list[str]:
    return ["generate", "-c", _cfg(d, **over), "-o", str(d / "o.zarr"), "--no-progress", *extra]


def _volume(d: Path) -> str:
    with mrcfile.new(d / "vol.mrc") as m:
        m.set_data(np.zeros((8, 16, 16), np.float32))
        m.voxel_size = 10.0
    return str(d / "vol.mrc")


def _particles(count: object) -> dict:
    particle = {"name": "b", "template": "builtin:sphere", "count": count}
    return {"thickness": 8, "particles": [particle]}


def _zarr_bad_spacing(d: Path) -> str:
    from faket_dask.io import Volume, write_volume

    path = d / "vol.zarr"
    write_volume(path, Volume(np.zeros((8, 16, 16), np.float32), 10.0))
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["pixel_spacing"] = "ten"
    (path / "zarr.json").write_text(json.dumps(meta))
    return str(path)


CASES = {
    "zarr_pixel_spacing_not_a_number": (
        lambda d: ["project", _zarr_bad_spacing(d), "-o", str(d / "p.mrc"), "--angles", "0"],
        "pixel_spacing 'ten' is not a positive number",
    ),
    "angles_1e9": (lambda d: _gen(d, tilts={"angles": "-90:90:0.0000001"}), "limit of 1000"),
    "angles_inf_config": (lambda d: _gen(d, tilts={"angles": "-inf:0:1"}), "NaN or Inf"),
    "angles_nan_cli": (
        lambda d: ["project", _volume(d), "-o", str(d / "p.mrc"), "--angles=nan:0:1"],
        "NaN or Inf",
    ),
    "angles_inf_cli": (
        lambda d: ["project", _volume(d), "-o", str(d / "p.mrc"), "--angles=-inf:0:1"],
        "NaN or Inf",
    ),
    "binary_tlt": (
        lambda d: (
            (d / "a.tlt").write_bytes(b"\x00\xff\xfe\x80" * 64),
            ["project", _volume(d), "-o", str(d / "p.mrc"), "--angles-file", str(d / "a.tlt")],
        )[1],
        "is not text",
    ),
    "n_samples_1e9": (lambda d: _gen(d, "--n-samples", "1000000000"), "limit of 1000000"),
    "n_samples_1e9_config": (lambda d: _gen(d, n_samples=10**9), "n_samples"),
    "particle_count_1e9": (lambda d: _gen(d, sample=_particles(10**9)), "limit of 100000"),
    "detector_200000": (lambda d: _gen(d, tilts={"shape": [200000, 200000]}), "limit of 16384"),
    "memory_per_sample": (
        lambda d: _gen(d, tilts={"shape": [16000, 16000]}, sample={"thickness": 4000}),
        "choose a smaller tilts.shape",
    ),
    "unknown_builtin": (
        lambda d: _gen(
            d, sample={"particles": [{"name": "b", "template": "builtin:cube", "count": 1}]}
        ),
        "built-in template 'cube' is not known",
    ),
    "negative_snr": (lambda d: _gen(d, noise={"snr": -1.0}), "must be positive"),
    "window_negative": (lambda d: _gen(d, "--window", "-1"), "--window must be at least 1"),
    "n_workers_zero": (lambda d: _gen(d, "--n-workers", "0"), "--n-workers must be at least 1"),
    "project_detector_1e9": (
        lambda d: [
            "project", _volume(d), "-o", str(d / "p.mrc"), "--angles", "-30:30:30",
            "--detector-width", "1000000000",
        ],
        "outside 1..16384",
    ),
    "synth_shape_1e5": (
        lambda d: ["reference", "synth", "-o", str(d / "r.mrc"), "--shape", "100000", "100000"],
        "outside 1..16384",
    ),
    "config_empty": (
        lambda d: (
            (d / "e.yaml").write_text("# nothing\n"),
            ["generate", "-c", str(d / "e.yaml"), "-o", str(d / "o.zarr")],
        )[1],
        "is empty",
    ),
    "config_is_a_directory": (
        lambda d: (
            (d / "dir.yaml").mkdir(),
            ["generate", "-c", str(d / "dir.yaml"), "-o", str(d / "o.zarr")],
        )[1],
        "is a directory",
    ),
    "config_binary": (
        lambda d: (
            (d / "b.yaml").write_bytes(bytes(range(256)) * 4),
            ["generate", "-c", str(d / "b.yaml"), "-o", str(d / "o.zarr")],
        )[1],
        "is not text",
    ),
}


def _run(root: Path, name: str) -> tuple[int, str, float, float, list[str]]:
    d = root / name
    d.mkdir()
    argv = CASES[name][0](d)
    before = sorted(p.name for p in d.iterdir())
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKET_DASK_FAULT")}
    env.update(FAKET_DASK_OFFLINE="1", DASK_SCHEDULER_ADDRESS="", COLUMNS="200")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*CLI, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_cap_memory,
    )
    _, stderr = proc.communicate(timeout=120)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # cumulative; differenced below
    after = sorted(p.name for p in d.iterdir())
    assert before == after, (name, before, after)  # nothing written
    return proc.returncode, stderr, wall, usage.ru_utime + usage.ru_stime, after


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("absurd")
    out = {}
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = usage.ru_utime + usage.ru_stime  # children of earlier tests
    for name in CASES:  # one at a time: the children's CPU time is read per case
        code, err, wall, cpu_total, _ = _run(root, name)
        out[name] = (code, err, wall, cpu_total - cpu_before)
        cpu_before = cpu_total
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_refused_up_front(results, name):
    code, err, wall, cpu = results[name]
    needle = CASES[name][1]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], err
    # a guard, not a timing: the imports alone (torch, scipy, dask) take 3-6 s of CPU on a busy
    # 2-core machine (5.2 s once in CI against a 5 s bound); the absurd work would take minutes
    assert cpu < 30.0, f"{name}: {cpu:.1f} s of CPU (wall {wall:.1f} s) before the refusal"


def test_a_case_that_does_work_fails_under_the_cap(tmp_path):
    """The cap bites: allocating what the 1.8e9-angle range would is killed, not refused."""
    code = "import numpy as np; np.arange(1.8e9, dtype=np.float64).sum()"
    proc = subprocess.run(
        [CLI[0], "-c", code], capture_output=True, text=True, preexec_fn=_cap_memory, timeout=60
    )
    assert proc.returncode != 0 and "MemoryError" in proc.stderr
