"""Trust the store, with real processes: one writer at a time, damage found and repaired.

One module fixture runs a real ``faket-dask generate`` (slowed by the fault hook) and, while
it runs, two more on the same store (a plain one and a ``--resume``): both must be refused. The
store it leaves is copied by the damage and torn-manifest tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import zarr
from _cli import CLI, run_cli, run_cli_checked
from _generate_helpers import tiny_config

from faket_dask.config import save_config
from faket_dask.io import store as st
from faket_dask.io.lock import lock_path
from faket_dask.io.verify import verify_store
from faket_dask.read.access import open_dataset

pytestmark = pytest.mark.timeout(600)

N = 3


def _recompute(store: Path) -> dict[int, dict[str, str]]:
    """Every complete sample's SHA-256 per checksummed array, read whole (independent of verify)."""
    out: dict[int, dict[str, str]] = {}
    for sid in sorted(st.completed_ids(store)):
        attrs = st.read_sample_attrs(store, sid)
        group = zarr.open_group(str(store), path=st.sample_group(sid), mode="r")
        out[sid] = {
            key: hashlib.sha256(np.ascontiguousarray(group[key][...]).tobytes()).hexdigest()
            for key in attrs["checksums"]
        }
    return out


def _sample_files(store: Path, sid: int) -> dict[str, bytes]:
    """Every file of a sample but its marker and the particle group's attrs (their STAR text
    holds the time starfile wrote it)."""
    folder = store / st.sample_group(sid)
    skip = {Path("zarr.json"), Path("particles/zarr.json")}
    return {
        str(f.relative_to(folder)): f.read_bytes()
        for f in sorted(folder.rglob("*"))
        if f.is_file() and f.relative_to(folder) not in skip
    }


def _resume(cfg: Path, store: Path) -> subprocess.CompletedProcess[str]:
    args = ["-c", cfg, "-o", store, "--resume", "--n-workers", "1", "--no-progress"]
    return run_cli_checked("generate", *args)


@pytest.fixture(scope="module")
def raced(tmp_path_factory):
    """A store written by one generate while two others tried to write it too."""
    root = tmp_path_factory.mktemp("trust")
    cfg = root / "tiny.yaml"
    save_config(tiny_config(n_samples=N), cfg)
    store = root / "d.zarr"
    args = ["generate", "-c", cfg, "-o", store, "--n-workers", "1", "--no-progress"]
    env = {**os.environ, "FAKET_DASK_FAULT": "sleep:5"}  # 15 s at least: time to race
    first = subprocess.Popen(
        [*CLI, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 120
    while not lock_path(store).exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    t0 = time.monotonic()
    with ThreadPoolExecutor(2) as pool:  # both at once, while the first still runs
        second_f = pool.submit(run_cli_checked, *args, check=False)
        resumed_f = pool.submit(run_cli_checked, *args, "--resume", check=False)
        second, resumed = second_f.result(), resumed_f.result()
    refused_s = time.monotonic() - t0
    still_running = first.poll() is None
    out, err = first.communicate(timeout=400)
    return {
        "root": root,
        "cfg": cfg,
        "store": store,
        "first": (first.returncode, out, err),
        "second": second,
        "resumed": resumed,
        "raced": still_running,
        "refused_s": refused_s,
        "pid": first.pid,
    }


def test_two_concurrent_generates_one_refused(raced):
    assert raced["raced"], "the first run had ended before the others tried"
    code, _, err = raced["first"]
    assert code == 0, err
    for proc in (raced["second"], raced["resumed"]):
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "is being written by another run" in lines[0]
        assert f"pid {raced['pid']}" in lines[0] and "started 20" in lines[0]
    store = raced["store"]
    assert not lock_path(store).exists()  # released
    assert st.completed_ids(store) == set(range(N))
    recomputed = _recompute(store)
    for sid in range(N):
        assert recomputed[sid] == st.read_sample_attrs(store, sid)["checksums"]
    rows = st.read_manifest(store)
    assert sorted(r["sample_id"] for r in rows if r["status"] == "ok") == list(range(N))
    report = verify_store(store)
    assert report.ok and report.checked == list(range(N)) and not report.unrecorded


def test_damage_found_by_verify_and_repaired_by_resume(raced, tmp_path):
    store = tmp_path / "d.zarr"
    shutil.copytree(raced["store"], store)
    pristine = {sid: _sample_files(store, sid) for sid in range(N)}
    sums = _recompute(store)
    # sample 0 loses a shard of its styled tilts; sample 1 gets one byte of a noisy shard flipped
    (store / st.sample_group(0) / "tilts/styled/c/0/0/0").unlink()
    shard = store / st.sample_group(1) / "tilts/noisy/c/1/0/0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF
    shard.write_bytes(bytes(data))

    proc = run_cli("verify", store)
    assert proc.returncode == 1, proc.stderr
    assert "sample 0: tilts/styled/c/0/0/0 is missing" in proc.stdout
    assert "sample 1: array tilts/noisy" in proc.stdout and "sample 2" not in proc.stdout
    assert "3 complete sample(s)" in proc.stdout and "2 damaged" in proc.stdout
    quick = run_cli("verify", store, "--quick")
    assert quick.returncode == 1 and "1 damaged" in quick.stdout  # a flipped byte keeps the size

    exp = run_cli("export", store, "--sample", 1, "--modality", "noisy", "-o", tmp_path / "e.mrc")
    assert exp.returncode == 2 and "sample 1 of" in exp.stderr and "is damaged" in exp.stderr
    assert not (tmp_path / "e.mrc").exists() and not (tmp_path / "e.tlt").exists()
    ds = open_dataset(store)
    with pytest.raises(Exception, match=r"sample 0 of .* is damaged"):
        ds.sample(0)
    ds.sample(1)  # the cheap check passes a flipped byte ...
    with pytest.raises(Exception, match=r"sample 1 of .* is damaged"):
        open_dataset(store, verify=True).sample(1)  # ... the full one does not
    open_dataset(store, verify=True).sample(2)

    # repair only sample 1; the resume's cheap check finds sample 0 by itself
    rep = run_cli("verify", store, "--repair", "--sample", 1)
    assert rep.returncode == 1 and "1 sample(s) marked incomplete" in rep.stdout
    assert st.completed_ids(store) == {0, 2}
    resumed = _resume(raced["cfg"], store)
    assert "damaged: sample 0 (tilts/styled/c/0/0/0 is missing)" in resumed.stderr
    assert "2 to go" in resumed.stderr
    assert run_cli("verify", store).returncode == 0
    assert _recompute(store) == sums
    for sid in range(N):
        assert _sample_files(store, sid) == pristine[sid]  # byte-identical files
    latest = st.latest_status(st.read_manifest(store))
    assert latest == dict.fromkeys(range(N), "ok")


def test_torn_manifest_survives_resume(raced, tmp_path):
    store = tmp_path / "d.zarr"
    shutil.copytree(raced["store"], store)
    mpath = store / st.MANIFEST
    whole = mpath.read_bytes()
    last = json.loads(whole.splitlines()[-1])["sample_id"]
    mpath.write_bytes(whole[:-20])  # a client killed while it wrote its last row ...
    st.mark_incomplete(store, last, "test")  # ... of a sample this resume computes again
    with pytest.warns(UserWarning, match="ends in a torn row"):
        info = run_cli("info", store, "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["complete"] == N - 1
    resumed = _resume(raced["cfg"], store)
    assert "torn row" in resumed.stderr
    raw = mpath.read_bytes()
    assert raw.endswith(b"\n")
    rows = [json.loads(ln) for ln in raw.splitlines()]  # every row whole
    ok = sorted(r["sample_id"] for r in rows if r["status"] == "ok")
    assert ok == list(range(N))  # one ok row per sample
    (aside,) = store.glob("manifest.jsonl.torn-*")
    assert whole[:-20].endswith(aside.read_bytes())
    assert verify_store(store).ok
