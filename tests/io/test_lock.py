"""The store lock: exclusive, names its holder, takes over stale locks, one winner of a race."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time

import pytest

from faket_dask.io.lock import (
    StoreLock,
    StoreLockedError,
    holder_info,
    lock_path,
    store_lock,
)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _plant(store, **fields) -> None:
    record = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": "2026-01-01T00:00:00+00:00",
        "token": "planted",
        "lease_s": 120.0,
        "command": "planted",
    }
    record.update(fields)
    lock_path(store).write_text(json.dumps(record))


def test_lock_file_beside_the_store_released_on_exit(tmp_path):
    store = tmp_path / "d.zarr"
    with store_lock(store, "test") as lock:
        assert lock.path == tmp_path / "d.zarr.lock" and lock.path.is_file()
        info = holder_info(store)
        assert info == {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": info["started_at"],
            "command": "test",
        }
        with store_lock(store):  # re-entrant within one process
            assert lock.path.is_file()
        assert lock.path.is_file()  # the outer hold goes on
    assert not lock_path(store).exists()
    assert not store.exists()  # the lock does not create the store


def test_a_live_holder_is_named_and_refused(tmp_path):
    store = tmp_path / "d.zarr"
    _plant(store, pid=os.getppid(), pid_start=None, command="faket-dask generate")
    with pytest.raises(StoreLockedError) as err:
        StoreLock(store).acquire()
    msg = str(err.value)
    assert f"pid {os.getppid()}" in msg and socket.gethostname() in msg
    assert "2026-01-01T00:00:00+00:00" in msg and str(lock_path(store)) in msg
    assert err.value.exit_code == 2
    assert json.loads(lock_path(store).read_text())["token"] == "planted"  # untouched


def test_a_dead_pid_on_this_host_is_taken_over(tmp_path):
    store = tmp_path / "d.zarr"
    _plant(store, pid=_dead_pid())
    lock = StoreLock(store)
    with pytest.warns(UserWarning, match="took over the stale lock.*is not running"):
        lock.acquire()
    try:
        assert json.loads(lock.path.read_text())["token"] == lock.token
    finally:
        lock.release()
    assert not lock.path.exists()


def test_a_reused_pid_is_taken_over(tmp_path):
    store = tmp_path / "d.zarr"
    _plant(store, pid=os.getpid(), pid_start="1")  # this pid, another start time
    lock = StoreLock(store)
    with pytest.warns(UserWarning, match="now another process"):
        lock.acquire()
    lock.release()


def test_another_host_lease_decides(tmp_path):
    store = tmp_path / "d.zarr"
    _plant(store, host="node-elsewhere", pid=1, lease_s=60.0)
    with pytest.raises(StoreLockedError, match="host node-elsewhere, pid 1"):
        StoreLock(store).acquire()  # fresh lease
    old = time.time() - 600
    os.utime(lock_path(store), (old, old))
    lock = StoreLock(store)
    with pytest.warns(UserWarning, match="lease expired"):
        lock.acquire()
    lock.release()


def test_the_holder_refreshes_its_lease(tmp_path):
    store = tmp_path / "d.zarr"
    lock = StoreLock(store, lease_s=0.4)
    lock.acquire()
    try:
        old = time.time() - 600
        os.utime(lock.path, (old, old))
        time.sleep(0.5)  # several refresh periods (lease / 4)
        assert time.time() - lock.path.stat().st_mtime < 5
        assert not lock.lost
    finally:
        lock.release()


def test_a_lost_lock_is_noticed_and_not_removed(tmp_path):
    store = tmp_path / "d.zarr"
    lock = StoreLock(store, lease_s=120)
    lock.acquire()
    _plant(store, host="node-elsewhere", token="theirs")  # taken over behind our back
    with pytest.warns(UserWarning, match="taken over by another run"):
        assert lock.refresh() is False
    lock.release()
    assert json.loads(lock_path(store).read_text())["token"] == "theirs"


def test_read_only_folder_is_one_line(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(Exception, match=r"output folder .* is not writable"):
            StoreLock(folder / "d.zarr").acquire()
    finally:
        folder.chmod(0o755)


def _race(store: str, start: float, queue: mp.Queue, done: mp.Event) -> None:
    while time.time() < start:
        time.sleep(0.001)
    lock = StoreLock(store)
    try:
        lock.acquire()
    except StoreLockedError:
        queue.put("refused")
        return
    queue.put("won")
    done.wait(60)  # hold it until every process has tried
    lock.release()


@pytest.mark.parametrize("stale", [False, True])
def test_processes_racing_for_a_lock_one_wins(tmp_path, stale):
    """Real processes start at the same instant; exactly one takes the (free or stale) lock."""
    store = tmp_path / "d.zarr"
    if stale:
        _plant(store, pid=_dead_pid())
    ctx = mp.get_context("spawn")
    queue, done = ctx.Queue(), ctx.Event()
    start = time.time() + 3.0
    procs = [ctx.Process(target=_race, args=(str(store), start, queue, done)) for _ in range(4)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=60) for _ in procs)
    done.set()
    for p in procs:
        p.join(30)
    assert results == ["refused", "refused", "refused", "won"]
    assert not lock_path(store).exists()
    assert not lock_path(store).with_name("d.zarr.lock.takeover").exists()
