"""Every bad input the reliability issue lists, through the CLI as a subprocess.

Each case must give exactly one line on stderr naming the problem and the fix, a non-zero exit
code (2 for bad input, 3 for an unreachable scheduler), no traceback, and leave every file that
existed before untouched (bytes and mtimes) with nothing new written.

The cases run concurrently in one module fixture (each CLI start costs an interpreter, and some
import torch); the tests then check one case each.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import yaml
from _cli import CLI

pytestmark = pytest.mark.timeout(120)


# --------------------------------------------------------------------------------------------
# Inputs, written with mrcfile/numpy directly (not with the code under test)
# --------------------------------------------------------------------------------------------


def _mrc(path: Path, data: np.ndarray, voxel: float | None = 10.0) -> Path:
    with warnings.catch_warnings(), mrcfile.new(path, overwrite=True) as m:
        warnings.simplefilter("ignore")  # NaN/Inf on purpose
        m.set_data(np.ascontiguousarray(data, dtype=np.float32))
        if voxel is not None:
            m.voxel_size = voxel
    return path


def _volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((8, 16, 16)).astype(np.float32)


def _tilts(n: int = 3, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(5.0, 1.0, (n, 16, 16)).astype(np.float32)


def _tlt(path: Path, angles: list[float]) -> None:
    path.write_text("".join(f"{a:.2f}\n" for a in angles))


def _config(**over: object) -> dict:
    cfg: dict = {
        "seed": 3,
        "n_samples": 2,
        "tilts": {"angles": "-30:30:30", "shape": [16, 16], "pixel_spacing": 20.0},
        "sample": {
            "thickness": 8,
            "particles": [{"name": "ball", "template": "builtin:sphere", "count": 1}],
        },
        "style": {"weights": "random", "batch_size": 4},
        "output": {"modalities": ["noisy", "noiseless"]},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def _yaml(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _style_args(d: Path, *, n_init: int = 3, weights: str = "random") -> list[str]:
    _mrc(d / "content.mrc", _tilts(3, 1))
    _mrc(d / "ref.mrc", _tilts(3, 2))
    _mrc(d / "init.mrc", _tilts(n_init, 3))
    return [
        "style",
        str(d / "content.mrc"),
        "--style",
        str(d / "ref.mrc"),
        "--init",
        str(d / "init.mrc"),
        "-o",
        str(d / "styled.mrc"),
        "--weights",
        weights,
        "--device",
        "cpu",
    ]


def _project_args(d: Path, volume: str, *extra: str) -> list[str]:
    return ["project", str(d / volume), "-o", str(d / "tilts.mrc"), "--device", "cpu", *extra]


# --------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One bad input: ``setup(dir) -> argv``; the one error line must match both patterns."""

    setup: Callable[[Path], list[str]]
    problem: str
    fix: str
    code: int = 2
    env: dict[str, str] | None = None
    max_seconds: float | None = None


def _truncated_mrc(d: Path) -> list[str]:
    path = _mrc(d / "vol.mrc", _volume())
    full = path.read_bytes()
    path.write_bytes(full[: 1024 + 500])  # the header and a little of the data
    return _project_args(d, "vol.mrc", "--angles", "-30:30:30")


def _corrupt_mrc(d: Path) -> list[str]:
    (d / "vol.mrc").write_bytes(np.random.default_rng(0).bytes(3000))
    return _project_args(d, "vol.mrc", "--angles", "-30:30:30")


def _zarr_not_a_store(d: Path) -> list[str]:
    (d / "vol.zarr").mkdir()
    (d / "vol.zarr" / "readme.txt").write_text("not zarr")
    return _project_args(d, "vol.zarr", "--angles", "-30:30:30")


def _zarr_is_a_file(d: Path) -> list[str]:
    (d / "vol.zarr").write_text("not a folder")
    return _project_args(d, "vol.zarr", "--angles", "-30:30:30")


def _nan_volume(d: Path) -> list[str]:
    vol = _volume()
    vol[2, 3, 4] = np.nan
    _mrc(d / "vol.mrc", vol)
    return _project_args(d, "vol.mrc", "--angles", "-30:30:30")


def _inf_reference(d: Path) -> list[str]:
    ref = _tilts(3)
    ref[1, 5, 5] = np.inf
    _mrc(d / "ref.mrc", ref)
    _tlt(d / "ref.tlt", [-30, 0, 30])
    return [
        "noise",
        "fit",
        "--reference",
        str(d / "ref.mrc"),
        "--snr",
        "1",
        "-o",
        str(d / "n.json"),
    ]


def _nan_style_reference(d: Path) -> list[str]:
    args = _style_args(d)
    ref = _tilts(3, 2)
    ref[0, 0, 0] = np.nan
    _mrc(d / "ref.mrc", ref)
    return args


def _constant_tilt(d: Path) -> list[str]:
    ref = _tilts(3)
    ref[1] = 4.0
    _mrc(d / "ref.mrc", ref)
    _tlt(d / "ref.tlt", [-30, 0, 30])
    return [
        "noise",
        "fit",
        "--reference",
        str(d / "ref.mrc"),
        "--snr",
        "1",
        "-o",
        str(d / "n.json"),
    ]


def _tilt_counts_differ(d: Path) -> list[str]:
    return _style_args(d, n_init=4)


def _two_d_input(d: Path) -> list[str]:
    _mrc(d / "img.mrc", _volume()[0])
    return _project_args(d, "img.mrc", "--angles", "-30:30:30")


def _angles_outside(d: Path) -> list[str]:
    _mrc(d / "vol.mrc", _volume())
    return _project_args(d, "vol.mrc", "--angles", "-100:100:50")


def _angles_not_increasing(d: Path) -> list[str]:
    _mrc(d / "vol.mrc", _volume())
    return _project_args(d, "vol.mrc", "--angles", "30,0,-30")


def _tlt_file_outside(d: Path) -> list[str]:
    _mrc(d / "vol.mrc", _volume())
    _tlt(d / "bad.tlt", [-30, 0, 95])
    return _project_args(d, "vol.mrc", "--angles-file", str(d / "bad.tlt"))


def _generate_args(d: Path, cfg_name: str = "c.yaml", *extra: str) -> list[str]:
    return ["generate", "-c", str(d / cfg_name), "-o", str(d / "out.zarr"), *extra]


def _unknown_key(d: Path) -> list[str]:
    cfg = _config()
    cfg["tilts"]["shap"] = [16, 16]
    _yaml(d / "c.yaml", cfg)
    return _generate_args(d, "c.yaml", "--dry-run")


def _wrong_type(d: Path) -> list[str]:
    _yaml(d / "c.yaml", _config(sample={"thickness": "thick"}))
    return _generate_args(d, "c.yaml", "--dry-run")


def _store_exists(d: Path) -> list[str]:
    _yaml(d / "c.yaml", _config())
    (d / "out.zarr").mkdir()
    (d / "out.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    return _generate_args(d, "c.yaml", "--scheduler", "tcp://127.0.0.1:1")


def _unwritable_folder(d: Path) -> Path | None:
    """A folder this process cannot create files in, or None (root on a plain filesystem)."""
    ro = d / "readonly"
    ro.mkdir()
    ro.chmod(0o500)
    candidates = [ro, Path("/proc/1")]
    for folder in candidates:
        if not folder.is_dir():
            continue
        try:
            fd, name = tempfile.mkstemp(dir=folder)
        except OSError:
            return folder
        os.close(fd)
        os.remove(name)
    return None


def _unwritable_output(d: Path) -> list[str]:
    folder = _unwritable_folder(d)
    if folder is None:
        pytest.skip("no folder is unwritable for this user (root): chmod does not apply")
    _mrc(d / "vol.mrc", _volume())
    return ["project", str(d / "vol.mrc"), "-o", str(folder / "t.mrc"), "--angles", "0"]


def _unwritable_store(d: Path) -> list[str]:
    folder = _unwritable_folder(d)
    if folder is None:
        pytest.skip("no folder is unwritable for this user (root): chmod does not apply")
    _yaml(d / "c.yaml", _config())
    # the unreachable scheduler shows the check happens before any cluster is contacted
    return [
        "generate",
        "-c",
        str(d / "c.yaml"),
        "-o",
        str(folder / "out.zarr"),
        "--scheduler",
        "tcp://127.0.0.1:1",
        "--worker-timeout",
        "5",
    ]


def _weights_not_vgg(d: Path) -> list[str]:
    (d / "w.pth").write_bytes(b"these are not weights" * 10)
    return _style_args(d, weights=str(d / "w.pth"))


def _weights_wrong_dict(d: Path) -> list[str]:
    import torch

    torch.save({"conv.weight": torch.zeros(2, 2)}, d / "w.pth")
    return _style_args(d, weights=str(d / "w.pth"))


def _weights_bad_hash(d: Path) -> list[str]:
    cache = d / "cache"
    cache.mkdir()
    # torchvision's file name carries the first hex digits of its SHA-256
    (cache / "vgg19-dcbb9e9d.pth").write_bytes(b"0" * 4096)
    return _style_args(d, weights="imagenet")


def _unreachable_scheduler(d: Path) -> list[str]:
    _yaml(d / "c.yaml", _config())
    return _generate_args(d, "c.yaml", "--scheduler", "tcp://127.0.0.1:1", "--worker-timeout", "5")


def _template_no_spacing(d: Path) -> list[str]:
    grid = np.indices((9, 9, 9)) - 4
    ball = (np.sqrt((grid**2).sum(0)) <= 3).astype(np.float32)
    _mrc(d / "tmpl.mrc", ball, voxel=None)
    cfg = _config(
        sample={
            "thickness": 8,
            "particles": [{"name": "blob", "template": "tmpl.mrc", "count": 1}],
        }
    )
    _yaml(d / "c.yaml", cfg)
    return ["sample", "build", "-c", str(d / "c.yaml"), "-o", str(d / "s.zarr")]


def _empty_particle_list(d: Path, name: str) -> list[str]:
    _mrc(d / "gm.mrc", _volume(), voxel=20.0)
    (d / name).write_text("")
    cfg = _config(
        sample={
            "thickness": 8,
            "particles": [],
            "grand_model": "gm.mrc",
            "grand_model_particles": name,
        }
    )
    _yaml(d / "c.yaml", cfg)
    return ["sample", "build", "-c", str(d / "c.yaml"), "-o", str(d / "s.zarr")]


def _zero_samples(d: Path) -> list[str]:
    _yaml(d / "c.yaml", _config())
    return _generate_args(d, "c.yaml", "--n-samples", "0")


def _zero_samples_in_config(d: Path) -> list[str]:
    _yaml(d / "c.yaml", _config(n_samples=0))
    return _generate_args(d, "c.yaml", "--dry-run")


CASES: dict[str, Case] = {
    "truncated_mrc": Case(_truncated_mrc, r"vol\.mrc", r"truncated|corrupt"),
    "corrupt_mrc": Case(_corrupt_mrc, r"vol\.mrc.*not a readable MRC", r"corrupt"),
    "zarr_not_a_store": Case(_zarr_not_a_store, r"not a Zarr", r"check the path"),
    "zarr_is_a_file": Case(_zarr_is_a_file, r"vol\.zarr.*not a Zarr", r"check the path"),
    "nan_volume": Case(_nan_volume, r"vol\.mrc.*NaN or Inf.*Z slice 2", r"replace them"),
    "inf_reference": Case(_inf_reference, r"ref\.mrc.*NaN or Inf.*tilt 1", r"replace them"),
    "nan_style_reference": Case(_nan_style_reference, r"ref\.mrc.*NaN or Inf", r"replace them"),
    "constant_tilt": Case(_constant_tilt, r"tilt 1 is constant", r"drop that tilt"),
    "tilt_counts_differ": Case(_tilt_counts_differ, r"tilt counts differ.*init\.mrc: 4", r"same"),
    "two_d_input": Case(_two_d_input, r"img\.mrc.*2-D", r"must be 3-D"),
    "angles_outside_90": Case(_angles_outside, r"-100|outside", r"±90|degrees"),
    "angles_not_increasing": Case(_angles_not_increasing, r"increasing", r"angle"),
    "tlt_file_outside_90": Case(_tlt_file_outside, r"95.*outside", r"±90"),
    "config_unknown_key": Case(_unknown_key, r"tilts\.shap\b", r"shape"),
    "config_wrong_type": Case(_wrong_type, r"sample\.thickness", r"integer|int"),
    "store_exists": Case(_store_exists, r"out\.zarr.*already exists", r"--resume"),
    "unwritable_output": Case(_unwritable_output, r"not writable", r"another output"),
    "unwritable_store": Case(_unwritable_store, r"not writable", r"another"),
    "weights_not_a_state_dict": Case(_weights_not_vgg, r"w\.pth", r"VGG-19|state dict"),
    "weights_wrong_state_dict": Case(
        _weights_wrong_dict, r"w\.pth.*not a VGG-19|not a VGG-19.*w\.pth", r"'imagenet'"
    ),
    "weights_fail_hash": Case(
        _weights_bad_hash,
        r"vgg19-dcbb9e9d\.pth.*corrupt.*SHA-256",
        r"delete the file",
        env={"FAKET_DASK_WEIGHTS_DIR": "{dir}/cache"},
    ),
    "unreachable_scheduler": Case(
        _unreachable_scheduler, r"cannot reach the Dask scheduler", r"127\.0\.0\.1:1", 3, None, 40
    ),
    "template_without_pixel_spacing": Case(
        _template_no_spacing, r"tmpl\.mrc.*no voxel size", r"pixel_spacing"
    ),
    "empty_particle_list_csv": Case(
        lambda d: _empty_particle_list(d, "parts.csv"), r"parts\.csv.*no particles", r"remove"
    ),
    "empty_particle_list_star": Case(
        lambda d: _empty_particle_list(d, "parts.star"), r"parts\.star.*no particles", r"remove"
    ),
    "zero_samples": Case(_zero_samples, r"--n-samples", r"at least 1"),
    "zero_samples_in_config": Case(_zero_samples_in_config, r"n_samples", r"1"),
}


# --------------------------------------------------------------------------------------------
# Running them
# --------------------------------------------------------------------------------------------


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file and folder under ``folder``: content hash (files) and mtime in ns."""
    out: dict[str, tuple[str, int]] = {}
    for p in sorted(folder.rglob("*")):
        st = p.stat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[str(p.relative_to(folder))] = (digest, st.st_mtime_ns)
    return out


@dataclass
class Result:
    code: int | None
    stdout: str
    stderr: str
    seconds: float
    before: dict[str, tuple[str, int]]
    after: dict[str, tuple[str, int]]
    skipped: str | None = None


def _run_case(root: Path, name: str, case: Case) -> Result:
    d = root / name
    d.mkdir()
    try:
        argv = case.setup(d)
    except pytest.skip.Exception as skip:
        return Result(None, "", "", 0.0, {}, {}, skipped=str(skip.msg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKET_DASK_FAULT")}
    env.update(
        FAKET_DASK_OFFLINE="1",
        FAKET_DASK_WEIGHTS_DIR=str(d / "no-weights-here"),
        DASK_SCHEDULER_ADDRESS="",
        COLUMNS="200",
    )
    env.update({k: v.format(dir=d) for k, v in (case.env or {}).items()})
    before = _snapshot(d)
    t0 = time.perf_counter()
    proc = subprocess.run([*CLI, *argv], capture_output=True, text=True, env=env, timeout=90)
    seconds = time.perf_counter() - t0
    return Result(proc.returncode, proc.stdout, proc.stderr, seconds, before, _snapshot(d))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Result]:
    root = tmp_path_factory.mktemp("bad_input")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(_run_case, root, name, c) for name, c in CASES.items()}
        out = {name: f.result() for name, f in futures.items()}
    for name in CASES:  # let pytest remove the folders again
        for p in (root / name).rglob("*"):
            if p.is_dir():
                p.chmod(0o755)
        (root / name).chmod(0o755)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_clear_line_and_touches_nothing(results, name):
    case, res = CASES[name], results[name]
    if res.skipped:
        pytest.skip(res.skipped)
    both = res.stdout + res.stderr
    assert "Traceback" not in both, both
    assert res.code == case.code, both
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, both
    line = lines[0]
    assert line.startswith("error: "), line
    assert re.search(case.problem, line), line
    assert re.search(case.fix, line), line
    assert res.after == res.before, "files were created or changed"
    if case.max_seconds is not None:
        assert res.seconds < case.max_seconds
