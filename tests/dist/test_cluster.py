"""Cluster resolution and connection, against real schedulers (no mocks)."""

from __future__ import annotations

import time

import pytest
from _subprocess_cluster import free_port

from faket_dask.dist.cluster import (
    ClusterSource,
    connect,
    detect_gpus,
    load_profile,
    resolve_source,
)
from faket_dask.dist.plugins import WorkerSetup
from faket_dask.errors import ClusterError, InputError

pytestmark = pytest.mark.timeout(120)


def test_resolution_order(tmp_path, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    sf = tmp_path / "scheduler.json"
    sf.write_text("{}")
    prof = tmp_path / "p.yaml"
    prof.write_text("cluster: distributed.LocalCluster\nkwargs: {n_workers: 1}\nscale: 1\n")
    assert resolve_source(scheduler="tcp://h:1").kind == "address"
    assert resolve_source(scheduler_file=sf).kind == "scheduler-file"
    assert resolve_source(cluster_profile=prof).kind == "profile"
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://env:8786")
    assert resolve_source() == ClusterSource("env", "tcp://env:8786")
    # explicit options override the environment variable
    assert resolve_source(scheduler="tcp://h:1").detail == "tcp://h:1"
    assert resolve_source(scheduler_file=sf).kind == "scheduler-file"
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    local = resolve_source(n_workers=3)
    assert local.kind == "local" and local.n_workers == 3
    with pytest.raises(InputError, match="give one of"):
        resolve_source(scheduler="tcp://h:1", scheduler_file=sf)
    with pytest.raises(InputError, match="does not exist"):
        resolve_source(scheduler_file=tmp_path / "missing.json")
    # threads per worker: embedded clusters only; external workers set their own --nthreads
    two = resolve_source(n_workers=1, threads_per_worker=2)
    assert two.threads_per_worker == 2 and "2-thread" in two.describe()
    assert resolve_source(n_workers=1).threads_per_worker == 1
    from faket_dask.dist.cluster import _local_worker_count

    assert _local_worker_count(None, 2) <= _local_worker_count(None, 1)
    assert _local_worker_count(None, 4096) == 1  # threads share the cores and the memory
    assert _local_worker_count(3, 2) == 3  # an explicit count wins
    with pytest.raises(InputError, match="embedded local cluster only"):
        resolve_source(scheduler="tcp://h:1", threads_per_worker=2)
    with pytest.raises(InputError, match="at least 1"):
        resolve_source(threads_per_worker=0)


def test_embedded_cluster_with_two_threads_per_worker(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    lines: list[str] = []
    with connect(n_workers=1, threads_per_worker=2, echo=lines.append) as client:
        assert list(client.nthreads().values()) == [2]
    assert any("1 2-thread worker process" in line for line in lines)


def _worker_threads() -> tuple[str | None, int]:
    import os

    import torch

    return os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()


def test_embedded_workers_get_their_share_whatever_the_caller_set(monkeypatch):
    # distributed's nanny lets a variable already in the caller's environment beat its config
    # and writes its own into the caller's environment: either made the workers' thread count
    # (hence the styled bytes) depend on what ran before in the process or the shell
    import os

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    before = dict(os.environ)
    share = max(1, (os.cpu_count() or 1) // 1)
    with connect(n_workers=1) as client:
        got = list(client.run(_worker_threads).values())
    assert got == [(str(share), share)]
    assert dict(os.environ) == before  # nothing of the nanny's is left in the caller


def test_detect_gpus_without_cuda(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert detect_gpus() == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert detect_gpus() == 0
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert detect_gpus() >= 0


def test_profile_validation(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster: LocalCluster\n")
    with pytest.raises(InputError, match="import path"):
        load_profile(bad)
    bad.write_text("cluster: distributed.LocalCluster\nscal: 2\n")
    with pytest.raises(InputError, match="unknown key 'scal'"):
        load_profile(bad)
    bad.write_text("cluster: nosuchpkg.Cluster\n")
    with pytest.raises(InputError, match="cannot import"):
        with connect(cluster_profile=bad, echo=None):
            pass


def test_connect_by_address(dask_cluster):
    lines: list[str] = []
    with connect(scheduler=dask_cluster.scheduler_address, echo=lines.append) as client:
        assert len(client.nthreads()) == 2
    assert lines and "2 worker(s)" in lines[0]


def test_env_address_used_and_overridden(dask_cluster, monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", dask_cluster.scheduler_address)
    with connect(echo=None) as client:
        assert client.scheduler.address == dask_cluster.scheduler_address
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", f"tcp://127.0.0.1:{free_port()}")
    with connect(scheduler=dask_cluster.scheduler_address, echo=None) as client:
        assert len(client.nthreads()) == 2


def test_unreachable_scheduler_is_cluster_error():
    addr = f"tcp://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler") as err:
        with connect(scheduler=addr, worker_timeout=2, echo=None):
            pass
    assert time.monotonic() - t0 < 15
    assert err.value.exit_code == 3
    assert "\n" not in str(err.value)


def test_no_worker_is_cluster_error():
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as empty:
        t0 = time.monotonic()
        with pytest.raises(ClusterError, match="no Dask worker joined"):
            with connect(scheduler=empty.scheduler_address, worker_timeout=1.5, echo=None):
                pass
        assert time.monotonic() - t0 < 15


def test_profile_starts_cluster_and_applies_dask_config(tmp_path):
    import dask

    prof = tmp_path / "p.yaml"
    prof.write_text(
        "cluster: distributed.LocalCluster\n"
        "kwargs: {n_workers: 0, processes: false, threads_per_worker: 1, "
        "dashboard_address: ':0'}\n"
        "scale: 1\n"
        "dask_config: {faket-test-key: 7}\n"
    )
    with connect(cluster_profile=prof, worker_timeout=30, echo=None) as client:
        assert len(client.nthreads()) == 1
        assert dask.config.get("faket-test-key") == 7
    assert dask.config.get("faket-test-key", None) is None


def test_worker_setup_plugin_sets_threads(dask_client):
    dask_client.register_plugin(WorkerSetup(torch_threads=1))

    def threads() -> int:
        import torch

        return torch.get_num_threads()

    assert set(dask_client.run(threads).values()) == {1}
