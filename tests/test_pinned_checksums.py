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

CPU only: the bytes are those of this machine's torch build (pinned in constraints.txt) and of
the embedded cluster's threads per worker (the cores shared among the workers).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
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


def _digests(path: Path) -> dict[str, str]:
    """SHA-256 of the C-order bytes of every array under ``samples/``."""
    out: dict[str, str] = {}

    def walk(group: Any, prefix: str) -> None:
        for name, arr in group.arrays():
            data = np.ascontiguousarray(arr[...])
            out[f"{prefix}{name}"] = hashlib.sha256(data.tobytes()).hexdigest()
        for name, sub in group.groups():
            walk(sub, f"{prefix}{name}/")

    walk(zarr.open_group(path, mode="r")["samples"], "samples/")
    return out


# one thread in the caller's environment, as a shell, or an earlier embedded cluster of the
# same process (distributed's nanny writes it there), may leave it: the embedded workers must
# still get their share of the cores, or the styled bytes change
_CALLER_THREADS = dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"), "1")


def _run(*args: str) -> None:
    env = {**os.environ, **_CALLER_THREADS}
    subprocess.run([*CLI, *args], check=True, capture_output=True, timeout=500, env=env)


def generate_all(workdir: Path) -> dict[str, dict[str, str]]:
    """Generate both datasets into ``workdir`` and return their digests."""
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


def test_generated_bytes_match_the_pinned_checksums(tmp_path):
    pinned = json.loads(PINNED.read_text())
    got = generate_all(tmp_path)
    for name in got:
        assert sorted(got[name]) == sorted(pinned[name]), f"{name}: other arrays than pinned"
        changed = [k for k in pinned[name] if got[name][k] != pinned[name][k]]
        assert not changed, f"{name}: bytes changed for {changed[:6]} (of {len(changed)})"


if __name__ == "__main__":  # regenerate the pins (a change meant to change sample bytes)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        pins = {**json.loads(PINNED.read_text()), **generate_all(Path(tmp))}
        PINNED.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
    print(f"wrote {PINNED}")
