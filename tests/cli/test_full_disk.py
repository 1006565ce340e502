"""A full disk: the run ends with its summary and the --resume hint; resume finishes the store.

The store lives on a small tmpfs (skipped where ``mount -t tmpfs`` is not allowed), so the
disk really fills up mid-run: samples fail with ENOSPC on the worker, the manifest or the
root's metadata cannot be written on the client. After the tmpfs is grown, ``--resume``
completes the store and ``verify`` finds every sample intact.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from _cli import run_cli, run_cli_checked
from _generate_helpers import tiny_config

from faket_dask.config import save_config
from faket_dask.io import store as st

pytestmark = pytest.mark.timeout(600)

N = 6


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(disk)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"cannot mount a tmpfs here ({err})")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


def test_full_disk_ends_with_summary_and_resume_hint(small_disk: Path, tmp_path):
    cfg = tmp_path / "tiny.yaml"
    save_config(tiny_config(n_samples=N), cfg)
    store = small_disk / "d.zarr"
    args = ["generate", "-c", cfg, "-o", store, "--n-workers", "1", "--no-progress"]
    full = run_cli_checked(*args, check=False)
    assert full.returncode == 1, full.stderr
    assert "summary" in full.stderr and "No space left on device" in full.stderr
    last = [ln for ln in full.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("error: ") and "rerun with --resume" in last, full.stderr
    assert "Traceback" not in full.stderr and "Compute Failed" not in full.stderr
    done_before = st.completed_ids(store)
    assert 0 < len(done_before) < N  # it did fill up mid-run

    grown = subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], timeout=30)
    assert grown.returncode == 0
    resumed = run_cli_checked(*args, "--resume")
    assert f"{len(done_before)} of {N} samples already complete" in resumed.stderr
    assert st.completed_ids(store) == set(range(N))
    check = run_cli("verify", store)
    assert check.returncode == 0, check.stdout
    assert os.path.exists(store / "zarr.json")


@pytest.fixture
def read_only_store(small_disk: Path):
    """A faket-dask store on a mount made read-only after it was written."""
    store = small_disk / "ro.zarr"
    st.create_store(store, {"config": tiny_config(n_samples=2).to_dict(), "n_samples": 2})
    ro = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], timeout=30)
    assert ro.returncode == 0
    return store


def test_read_only_store_is_one_line_for_split_and_resume(read_only_store: Path, tmp_path):
    cfg = tmp_path / "tiny.yaml"
    save_config(tiny_config(n_samples=2), cfg)
    split = run_cli("split", read_only_store)
    resume = run_cli("generate", "-c", cfg, "-o", read_only_store, "--resume", "--no-progress")
    for proc, needle in ((split, "cannot be written"), (resume, "is not writable")):
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr
