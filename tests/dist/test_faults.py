"""Faults on real clusters: workers and clients die, GPUs run out of memory; nothing is lost.

What is shown (the reliability issue):

* a worker killed with ``os._exit`` in the middle of a sample: the run completes, every sample
  is complete exactly once, and the stored bytes equal a serial in-process run's;
* a worker that dies on one sample every time: that sample fails (``KilledWorker`` after the
  allowed failures), the others complete, the CLI exits with 1;
* the client killed mid-run, then a resume: only unfinished samples run, stray ``*.partial``
  files and a half-written sample are cleaned, and every complete sample has all its arrays;
* an out-of-memory error in a style batch (``$FAKET_DASK_FAULT_OOM_BATCH_ABOVE``): the batch is
  halved and the sample's bytes are those of a run without the fault;
* determinism on the CPU: the same bytes for every style batch size;
* the scheduler killed mid-run: ``generate`` stops with exit code 3 and one line instead of
  waiting forever, records no false failures, and ``--resume`` on a new cluster completes;
  a scheduler restarted at the same address gets the in-flight samples again and the run
  completes.

Faults go through the documented hooks (``$FAKET_DASK_FAULT``,
``$FAKET_DASK_FAULT_OOM_BATCH_ABOVE``) or a real ``os._exit`` in a worker, never mocks. The
session cluster's workers are Nanny processes (restarted after a death) with one torch thread
each.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import zarr
from _cli import CLI
from _generate_helpers import tiny_config
from _subprocess_cluster import free_port, start_scheduler, start_worker, stop_all

from faket_dask import pipeline as pl
from faket_dask.config import save_config
from faket_dask.dist.runner import GenerateOptions, dataset_digest, generate, task_key
from faket_dask.io import store as st

pytestmark = pytest.mark.timeout(150)

N = 4


def _config(**over):
    """Styled samples of 3 tilts (16 x 16): a style batch of 3 holds the whole series."""
    over = {"n_samples": N, **over}
    over["style"] = {"batch_size": 3, **over.get("style", {})}
    return tiny_config(**over)


@contextlib.contextmanager
def _torch_threads(n: int):
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _serial_store(cfg, path: Path, ids) -> Path:
    """Samples computed in this process, one torch thread (like a worker): the reference."""
    inputs = pl.resolve_inputs(cfg, path)
    st.create_store(path, {"config": cfg.to_dict()})
    inputs = pl.materialize_inputs(inputs, cfg, path)
    with _torch_threads(1):
        for sid in ids:
            pl.simulate_sample(pl.SampleSpec(cfg.seed, sid, cfg, str(path), inputs))
    return path


def _arrays(store: Path, sid: int) -> dict[str, np.ndarray]:
    """Every array of a sample group, read through zarr (not the code under test)."""
    group = zarr.open_group(str(store), path=st.sample_group(sid), mode="r")
    return {
        name: np.asarray(node[...])
        for name, node in group.members(max_depth=None)
        if isinstance(node, zarr.Array)
    }


def _assert_same_bytes(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].tobytes() == b[name].tobytes(), name


def _assert_sample_whole(store: Path, sid: int) -> None:
    """A complete sample holds every array it lists, fully written.

    Floating arrays have NaN as their fill value, so a missing shard or chunk would read as
    NaN; every array with a recorded checksum must read back to that checksum.
    """
    import hashlib

    attrs = st.read_sample_attrs(store, sid)
    assert attrs and attrs["complete"] is True
    arrays = _arrays(store, sid)
    for name, data in arrays.items():
        if data.dtype.kind == "f":
            assert np.isfinite(data).all(), f"sample {sid}: {name} has missing chunks"
    listed = attrs["checksums"]
    assert {"tilts/styled", "tilts/noisy", "tilts/noiseless", "volume/class_mask"} <= set(listed)
    for name, digest in listed.items():
        assert name in arrays, f"sample {sid}: {name} is listed but missing"
        raw = np.ascontiguousarray(arrays[name]).tobytes()
        assert hashlib.sha256(raw).hexdigest() == digest, f"sample {sid}: {name} differs"


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> Path:
    """The reference: samples 0..N-1 of :func:`_config`, computed serially in-process."""
    return _serial_store(_config(), tmp_path_factory.mktemp("serial") / "serial.zarr", range(N))


def _ok_counts(store: Path) -> Counter:
    return Counter(int(r["sample_id"]) for r in st.read_manifest(store) if r["status"] == "ok")


def _wait_idle(client, timeout: float = 60) -> None:
    """Wait until no worker executes anything (orphaned tasks of a dead client finish)."""

    def count(dask_worker):
        return len(dask_worker.state.executing)

    deadline = time.monotonic() + timeout
    while sum(client.run(count).values()) and time.monotonic() < deadline:
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# A worker killed in the middle of a sample
# --------------------------------------------------------------------------------------------


def test_worker_killed_mid_sample_run_completes_with_serial_bytes(
    dask_cluster, dask_client, serial, tmp_path, monkeypatch
):
    import torch
    from distributed import Client

    assert set(dask_client.run(torch.get_num_threads).values()) == {1}  # like the serial run
    cfg = _config()
    store = tmp_path / "k.zarr"
    # every sample sleeps after computing, before writing its tilts: the window for the kill
    monkeypatch.setenv("FAKET_DASK_FAULT", "sleep:1.5")
    result: dict = {}

    def run() -> None:
        try:
            result["report"] = generate(cfg, store, dask_client)
        except BaseException as err:  # pragma: no cover - reported below
            result["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    killed: dict = {}
    keys = {task_key(dataset_digest(cfg), sid): sid for sid in range(N)}
    with Client(dask_cluster.scheduler_address, set_as_default=False) as killer:
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline and thread.is_alive():
            for addr, running in killer.processing().items():
                for key in running:
                    sid = keys.get(key)
                    attrs = st.read_sample_attrs(store, sid) if sid is not None else None
                    if attrs and attrs.get("complete") is False:  # prepared, not yet written
                        pid = killer.run(os.getpid, workers=[addr])[addr]
                        killed.update(sid=sid, addr=addr, pid=pid, attrs=attrs)
                        with contextlib.suppress(Exception):
                            killer.run(os._exit, 1, workers=[addr])
                        break
                if killed:
                    break
            time.sleep(0.05)
    thread.join(timeout=120)
    dask_client.wait_for_workers(2, timeout=60)  # the Nanny restarts the dead worker
    assert killed, "no sample was caught mid-way"
    assert "error" not in result, result.get("error")
    report = result["report"]
    assert report.ok and report.n_done == N and report.n_failed == 0
    # the sample was redone elsewhere: by another process than the one killed
    redone = st.read_sample_attrs(store, killed["sid"])["summary"]["worker"]
    assert not redone.endswith(f":{killed['pid']}")
    # complete exactly once, and byte for byte the serial run
    assert st.completed_ids(store, range(N)) == set(range(N))
    assert _ok_counts(store) == Counter(range(N))
    assert sorted(s["sample_id"] for s in report.summaries) == list(range(N))
    for sid in range(N):
        _assert_sample_whole(store, sid)
        _assert_same_bytes(_arrays(store, sid), _arrays(serial, sid))
    assert not list(store.rglob("*.partial"))


# --------------------------------------------------------------------------------------------
# A worker that dies on one sample every time
# --------------------------------------------------------------------------------------------


def test_sample_that_kills_every_worker_fails_alone_exit_code_1(
    dask_cluster, dask_client, tmp_path
):
    cfg = tiny_config(n_samples=3, style={"enabled": False}, output={"modalities": ["noisy"]})
    cfg_path = tmp_path / "c.yaml"
    save_config(cfg, cfg_path)
    store = tmp_path / "d.zarr"

    def set_allowed(dask_scheduler, n):
        old = dask_scheduler.allowed_failures
        dask_scheduler.allowed_failures = n
        return old

    # one retry after a death (the default is 3; fewer deaths keep the test short)
    old = dask_client.run_on_scheduler(set_allowed, n=1)
    env = {**os.environ, "FAKET_DASK_FAULT": "exit:1"}
    try:
        proc = subprocess.run(
            [
                *CLI,
                "generate",
                "-c",
                cfg_path,
                "-o",
                store,
                "--scheduler",
                dask_cluster.scheduler_address,
                "--window",
                "1",  # one task in flight: a death blames only the guilty sample
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        dask_client.run_on_scheduler(set_allowed, n=old)
        dask_client.wait_for_workers(2, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "KilledWorker" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: 1 of 3 samples failed")
    assert st.completed_ids(store, range(3)) == {0, 2}
    rows = st.read_manifest(store)
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["sample_id"] for r in failed] == [1] and "KilledWorker" in failed[0]["error"]
    assert _ok_counts(store) == Counter([0, 2])


# --------------------------------------------------------------------------------------------
# The client killed mid-run, then --resume
# --------------------------------------------------------------------------------------------


def test_client_killed_then_resume_cleans_strays_and_completes_whole_samples(
    dask_cluster, dask_client, tmp_path
):
    n = 8
    cfg = _config(n_samples=n)
    cfg_path = tmp_path / "c.yaml"
    save_config(cfg, cfg_path)
    store = tmp_path / "r.zarr"
    env = {**os.environ, "FAKET_DASK_FAULT": "sleep:0.3"}
    cmd = [
        *CLI,
        "generate",
        "-c",
        str(cfg_path),
        "-o",
        str(store),
        "--scheduler",
        dask_cluster.scheduler_address,
        "--window",
        "2",
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if store.exists() and len(st.completed_ids(store, range(n))) >= 2:
                break
            assert proc.poll() is None, "generate ended before it could be killed"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    _wait_idle(dask_client)
    before = st.completed_ids(store, range(n))
    assert 2 <= len(before) < n
    todo = sorted(set(range(n)) - before)

    # What a crash can leave: stray *.partial files of atomic writes, and a sample group that
    # was half written (arrays present, some missing, no complete marker).
    strays = [
        store / "zarr.json.1234.partial",
        store / "samples" / "000007.abcd.partial",
        store / "inputs" / "x.partial",
    ]
    half = todo[0]
    src = store / "samples" / f"{min(before):06d}"
    dst = store / "samples" / f"{half:06d}"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    meta = json.loads((dst / "zarr.json").read_text())
    meta["attributes"]["complete"] = False
    meta["attributes"]["sample_id"] = half
    (dst / "zarr.json").write_text(json.dumps(meta))
    shutil.rmtree(dst / "tilts" / "styled" / "c")  # the styled tilts never got written
    strays.append(dst / "tilts" / "noisy" / "c.5678.partial")
    for path in strays:
        path.write_text("torn")
    assert not st.is_complete(store, half)

    report = generate(cfg, store, dask_client, GenerateOptions(resume=True))
    assert report.ok and report.n_skipped == len(before)
    ran = {sid for sid in range(n) if st.read_sample_attrs(store, sid)["run_id"] == report.run_id}
    assert ran == set(todo)
    assert not list(store.rglob("*.partial"))
    assert st.completed_ids(store, range(n)) == set(range(n))
    assert _ok_counts(store) == Counter(range(n))
    for sid in range(n):
        _assert_sample_whole(store, sid)
    # the half-written sample was rewritten from scratch: its own layout, not the copy's
    assert st.read_sample_attrs(store, half)["summary"]["sample_id"] == half
    ours, copied = _arrays(store, half), _arrays(store, min(before))
    assert ours["volume/instance_mask"].tobytes() != copied["volume/instance_mask"].tobytes()


# --------------------------------------------------------------------------------------------
# Out of memory in a style batch; batch sizes
# --------------------------------------------------------------------------------------------


def test_style_oom_halves_the_batch_and_keeps_the_bytes(serial, tmp_path, monkeypatch, caplog):
    from faket_dask.stages.style import ENV_FAULT_OOM

    cfg = _config()
    assert cfg.style.batch_size == 3
    monkeypatch.setenv(ENV_FAULT_OOM, "2")  # a batch of 3 tilts "runs out of memory"
    with caplog.at_level(logging.WARNING, logger="faket_dask.stages.style"):
        path = _serial_store(cfg, tmp_path / "oom.zarr", [0])
    assert "out of memory on a batch of 3 tilts; retrying in batches of 1" in caplog.text
    assert st.is_complete(path, 0)
    _assert_same_bytes(_arrays(path, 0), _arrays(serial, 0))


@pytest.mark.parametrize("batch_size", [1, 2])
def test_cpu_bytes_do_not_depend_on_the_style_batch_size(serial, tmp_path, batch_size):
    cfg = _config(style={"batch_size": batch_size})
    path = _serial_store(cfg, tmp_path / f"b{batch_size}.zarr", [1])
    _assert_same_bytes(_arrays(path, 1), _arrays(serial, 1))


# --------------------------------------------------------------------------------------------
# The scheduler dies (or restarts) in the middle of a run
# --------------------------------------------------------------------------------------------


def _generate(
    cfg_path: Path, store: Path, address: str, *extra: str, timeout: str = "10"
) -> subprocess.Popen:
    return subprocess.Popen(
        [
            *(*CLI, "generate", "-c", str(cfg_path)),
            *(
                "-o",
                str(store),
                "--scheduler",
                address,
                "--no-progress",
                "--worker-timeout",
                timeout,
            ),
            *extra,
        ],
        env={**os.environ, "FAKET_DASK_FAULT": "sleep:0.3"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("scheduler_comes_back", [False, True])
def test_scheduler_lost_mid_run(tmp_path, scheduler_comes_back):
    n = 8
    cfg = _config(n_samples=n, style={"enabled": False}, output={"modalities": ["noisy"]})
    cfg_path = tmp_path / "c.yaml"
    save_config(cfg, cfg_path)
    store = tmp_path / "s.zarr"
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [start_scheduler(port=port)]
    try:
        time.sleep(2)
        procs.append(start_worker(address))
        # the restarted scheduler must come up within the client's reconnect window
        gen = _generate(cfg_path, store, address, timeout="30" if scheduler_comes_back else "10")
        deadline = time.monotonic() + 120
        while not (store.exists() and len(st.read_manifest(store)) >= 2):
            assert gen.poll() is None and time.monotonic() < deadline, gen.stderr
            time.sleep(0.05)
        procs[0].send_signal(signal.SIGKILL)  # the scheduler dies mid-run
        procs[0].wait(timeout=10)
        if scheduler_comes_back:  # at the same address, with a fresh worker
            time.sleep(1)
            procs.append(start_scheduler(port=port))
            time.sleep(2)
            procs.append(start_worker(address))
        _, err = gen.communicate(timeout=120)
        rows = st.read_manifest(store)
        assert all(r["status"] == "ok" for r in rows)  # cancelled by the loss: not failures
        if scheduler_comes_back:
            assert gen.returncode == 0, err
            assert "new scheduler: submitting" in err
            assert st.completed_ids(store, range(n)) == set(range(n))
            assert _ok_counts(store) == Counter(range(n))
            return
        assert gen.returncode == 3, err
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: lost the connection to tcp://127.0.0.1")
        assert "--resume" in last
        assert "Traceback" not in err
        before = st.completed_ids(store, range(n))
        assert 2 <= len(before) < n
        # a new cluster, then --resume finishes the rest
        port = free_port()
        address = f"tcp://127.0.0.1:{port}"
        procs += [start_scheduler(port=port)]
        time.sleep(2)
        procs.append(start_worker(address))
        again = _generate(cfg_path, store, address, "--resume")
        _, err = again.communicate(timeout=120)
        assert again.returncode == 0, err
        assert st.completed_ids(store, range(n)) == set(range(n))
        assert _ok_counts(store) == Counter(range(n))
    finally:
        stop_all(procs)
