"""Ctrl-C as a terminal sends it (SIGINT to the whole process group): one message, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from _cli import CLI
from _generate_helpers import tiny_config

from faket_dask.config import save_config
from faket_dask.io import store as st
from faket_dask.io.lock import lock_path

pytestmark = pytest.mark.timeout(300)


def test_ctrl_c_prints_no_worker_traceback_and_releases_the_lock(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    save_config(tiny_config(n_samples=4), cfg)
    store = tmp_path / "d.zarr"
    env = {**os.environ, "FAKET_DASK_FAULT": "sleep:3"}
    proc = subprocess.Popen(
        [*CLI, "generate", "-c", str(cfg), "-o", str(store), "--n-workers", "1", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    deadline = time.monotonic() + 180
    while not (store / "samples" / "000000").exists():  # a sample is being written
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert not lock_path(store).exists()
    assert st.is_store(store)
