"""Behaviour pinned by bytes: a dataset generated through the real CLI hashes as recorded.

The demo config (one sample, with the random weights of its offline fallback) and a rich config
(two particle classes, vesicles, a planar membrane, fiducials, solvent, an SNR range, two style
references drawn per sample, every modality, the density and a tomogram) are generated with
``faket-dask generate`` on an embedded cluster, and the SHA-256 of every array
of every sample is computed here, independently of the checksums the store records.
``tests/data/pinned-checksums.json`` holds the values of sample builder 2 (issue 18; the layered
re-layout of issue 13 left the builder-1 values unchanged): a refactor must leave them
unchanged. A change that is meant to change sample bytes (a new builder version) regenerates
the file with ``python tests/test_pinned_checksums.py`` and says so in its commit.

CPU only. Two kinds of array:

* the sample (volume, masks, density), the particle tables, the noiseless projections and
  the labels: bytes pinned exactly, on any machine;
* the tilts that torch's float32 kernels compute (``content``, ``baseline``, ``noisy``,
  ``styled``) and the tomogram with its pyramid: their bytes are those of the machine's
  kernels (instruction set, BLAS blocking, threads; seen: two machines, and
  ``ATEN_CPU_CAPABILITY=default`` on one changes all of them). The style step's first Adam
  step (about ``lr * sign(grad)``) even turns a rounding difference of a gradient near 0 into
  a whole step for that pixel. These must equal one recorded machine's bytes as a set
  (``machines``); on a machine whose set is not recorded, their mean, standard
  deviation and 1, 50 and 99 % quantiles must match the recorded ones to 1e-3 standard
  deviations (machines differ by 1e-5 at most), and a warning says so. A set that matches a
  recorded machine's in part is a change, and fails.

``python tests/test_pinned_checksums.py --add-machine`` records this machine's set (its other
arrays must match the pins).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zarr

from faket_dask.demo import demo_config

PINNED = Path(__file__).parent / "data" / "pinned-checksums.json"
CLI = [sys.executable, "-m", "faket_dask_cli"]

pytestmark = pytest.mark.timeout(600)

RICH: dict[str, Any] = {
    "seed": 11,
    "n_samples": 2,
    "tilts": {"angles": "-45:45:15", "shape": [48, 40], "pixel_spacing": 12.0},
    "sample": {
        "thickness": 24,
        "particles": [
            {"name": "ribo", "template": "builtin:ribosome:0.5", "count": 3},
            {"name": "rod", "template": "builtin:rod:0.3", "count": 2},
        ],
        "membranes": {
            "vesicles": 1,
            "vesicle_radius": [80.0, 120.0],
            "planar": 1,
            "planar_radius": [100.0, 150.0],
        },
        "fiducials": {"count": 2, "radius": 30.0},
        "solvent": 0.2,
    },
    "noise": {"snr": [0.2, 0.6]},
    "style": {"weights": "random", "batch_size": 4},
    "reconstruction": {"enabled": True, "bin": 2},
    "output": {
        "modalities": ["styled", "noisy", "content", "baseline", "noiseless"],
        "save_density": True,
        "tilts_per_shard": 4,
        "chunk": 32,
    },
}


#: Arrays whose bytes are those of the machine's torch kernels.
BY_MACHINE = (
    "/tilts/content",
    "/tilts/baseline",
    "/tilts/noisy",
    "/tilts/styled",
    "/tomogram/tomogram",
    "/tomogram/multiscale/",
)
#: Quantiles compared where a machine's bytes are not recorded.
QUANTILES = (0.01, 0.5, 0.99)


def by_machine(key: str) -> bool:
    """Whether array ``key``'s bytes depend on the machine's torch kernels."""
    return any(part in key for part in BY_MACHINE)


def _digests(path: Path) -> tuple[dict[str, str], dict[str, list[float]]]:
    """SHA-256 of the C-order bytes of every array under ``samples/``, and the statistics
    (mean, standard deviation, :data:`QUANTILES`) of those :func:`by_machine`."""
    out: dict[str, str] = {}
    stats: dict[str, list[float]] = {}

    def walk(group: Any, prefix: str) -> None:
        for name, arr in group.arrays():
            data = np.ascontiguousarray(arr[...])
            key = f"{prefix}{name}"
            out[key] = hashlib.sha256(data.tobytes()).hexdigest()
            if by_machine(key):
                x = data.astype(np.float64)
                stats[key] = [float(x.mean()), float(x.std())]
                stats[key] += [float(q) for q in np.quantile(x, QUANTILES)]
        for name, sub in group.groups():
            walk(sub, f"{prefix}{name}/")

    walk(zarr.open_group(path, mode="r")["samples"], "samples/")
    return out, stats


# one thread in the caller's environment, as a shell, or an earlier embedded cluster of the
# same process (distributed's nanny writes it there), may leave it: the embedded workers must
# still get their share of the cores, or the styled bytes change
_CALLER_THREADS = dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"), "1")


def _run(*args: str) -> None:
    env = {**os.environ, **_CALLER_THREADS}
    subprocess.run([*CLI, *args], check=True, capture_output=True, timeout=500, env=env)


def generate_all(workdir: Path) -> dict[str, tuple[dict[str, str], dict[str, list[float]]]]:
    """Generate both datasets into ``workdir``; their digests and statistics (:func:`_digests`)."""
    refs = []
    for seed in (1, 2):
        ref = workdir / f"ref{seed}.mrc"
        _run("reference", "synth", "-o", str(ref), "--shape", "7", "64", "64",
             "--angles", "-45:45:15", "--seed", str(seed))  # fmt: skip
        refs.append(str(ref))
    cfg = json.loads(json.dumps(RICH))
    cfg["style"].update(reference=refs[0], references=refs)
    (workdir / "rich.yaml").write_text(yaml.safe_dump(cfg))
    # the demo config with the weights its offline fallback gives (random, the dataset seed)
    demo = demo_config(1).to_dict()
    demo["style"]["weights"] = "random"
    (workdir / "demo.yaml").write_text(yaml.safe_dump(demo))
    jobs = {"demo": ["-c", str(workdir / "demo.yaml")], "rich": ["-c", str(workdir / "rich.yaml")]}
    result = {}
    for name, args in jobs.items():
        out = workdir / f"{name}.zarr"
        _run("generate", *args, "-o", str(out), "--n-workers", "1")
        result[name] = _digests(out)
    return result


def _machine_bytes_ok(
    name: str, got: dict[str, str], stats: dict[str, list[float]], pinned: dict[str, Any]
) -> None:
    """The :func:`by_machine` arrays: a recorded machine's bytes, else their statistics."""
    keys = sorted(k for k in pinned[name] if by_machine(k))
    sets = [pinned[name], *(m[name] for m in pinned.get("machines", []))]
    same = [[got[k] == s[k] for k in keys] for s in sets]
    if any(all(m) for m in same):
        return
    partly = [k for m in same if any(m) for k, ok in zip(keys, m, strict=True) if not ok]
    assert not partly, f"{name}: bytes changed for {partly[:6]} (the rest are a machine's)"
    ref = pinned["machine_stats"][name]
    off = {k: float(np.max(np.abs(np.subtract(stats[k], ref[k])))) / ref[k][1] for k in keys}
    bad = {k: v for k, v in off.items() if not v <= 1e-3}
    assert not bad, f"{name}: statistics changed (in standard deviations) for {bad}"
    import torch

    warnings.warn(
        f"{name}: this machine's torch kernels (CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}) give tilt bytes not recorded here; "
        f"their statistics match (within {max(off.values()):.1e} standard deviations)",
        stacklevel=2,
    )


def test_generated_bytes_match_the_pinned_checksums(tmp_path):
    pinned = json.loads(PINNED.read_text())
    got = generate_all(tmp_path)
    for name, (digests, stats) in got.items():
        assert sorted(digests) == sorted(pinned[name]), f"{name}: other arrays than pinned"
        changed = [k for k in pinned[name] if not by_machine(k) and digests[k] != pinned[name][k]]
        assert not changed, f"{name}: bytes changed for {changed[:6]} (of {len(changed)})"
        _machine_bytes_ok(name, digests, stats, pinned)


def _regenerate(add_machine: bool) -> None:
    """Write the pins: all of them (a change meant to change sample bytes), or this machine's
    bytes beside the recorded ones (its other arrays must match)."""
    import tempfile

    pins = json.loads(PINNED.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        got = generate_all(Path(tmp))
    if add_machine:
        for name, (digests, _) in got.items():
            changed = [k for k in pins[name] if not by_machine(k) and digests[k] != pins[name][k]]
            assert not changed, f"{name}: bytes changed for {changed[:6]}: not a machine's"
        pins.setdefault("machines", []).append(
            {name: {k: v for k, v in d.items() if by_machine(k)} for name, (d, _) in got.items()}
        )
        pins.setdefault("machine_stats", {name: stats for name, (_, stats) in got.items()})
    else:
        pins.update({name: digests for name, (digests, _) in got.items()})
        pins["machines"] = []
        pins["machine_stats"] = {name: stats for name, (_, stats) in got.items()}
    PINNED.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
    print(f"wrote {PINNED}")


if __name__ == "__main__":  # regenerate the pins (a change meant to change sample bytes)
    _regenerate(add_machine="--add-machine" in sys.argv[1:])
