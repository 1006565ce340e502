"""generate() on real clusters: complete stores, determinism, randomisation, failures, resume."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import time
import warnings

import numpy as np
import pytest
import xarray as xr
from _generate_helpers import tiny_config
from _subprocess_cluster import start_quiet, start_scheduler, start_worker, stop_all

from faket_dask import pipeline as pl
from faket_dask.config import save_config
from faket_dask.dist.runner import (
    GenerateOptions,
    changed_keys,
    dataset_digest,
    generate,
    task_key,
)
from faket_dask.errors import InputError
from faket_dask.io import store as st
from faket_dask.io.writers import array_checksum

pytestmark = pytest.mark.timeout(180)

N = 20


def _inputs_files(tmp):
    """A second style reference (MRC + .tlt) and a second noise model (noise.json)."""
    from faket_dask.io import write_tilt_series
    from faket_dask.stages.noise import fit_noise_model_from_reference
    from faket_dask.stages.reference_synth import demo_reference

    angles = np.array([-40.0, 0.0, 40.0])
    ref = demo_reference((16, 16), angles, 20.0, seed=5)
    ref_path = tmp / "ref2.mrc"
    write_tilt_series(ref_path, ref)
    model = fit_noise_model_from_reference(ref.data, angles, 2.0)
    noise_path = model.save(tmp / "noise2.json")
    return str(ref_path), str(noise_path)


@pytest.fixture(scope="module")
def two_runs(dask_cluster, tmp_path_factory):
    """The same 20-sample dataset (2 references x 2 noise models) generated twice."""
    from distributed import Client, get_task_stream

    tmp = tmp_path_factory.mktemp("runs")
    ref2, noise2 = _inputs_files(tmp)
    cfg = tiny_config(
        n_samples=N,
        style={"references": ["demo", ref2]},
        noise={"models": ["demo", noise2]},
        tilts={"misalignment_px": 0.5},
    )
    out = {}
    for name in ("a", "b"):
        with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
            with get_task_stream(client=client) as ts:
                report = generate(cfg, tmp / f"{name}.zarr", client)
            loads = client.run(pl.model_loads)
        out[name] = (report, tmp / f"{name}.zarr", ts.data, loads)
    out["config"] = cfg
    return out


def test_twenty_samples_complete_store_opens_with_labels(two_runs):
    report, store, _, _ = two_runs["a"]
    assert report.ok and report.n_done == N and report.n_failed == 0
    assert st.completed_ids(store, range(N)) == set(range(N))
    rows = st.read_manifest(store)
    assert sorted(r["sample_id"] for r in rows) == list(range(N))
    assert "consolidated_metadata" in json.loads((store / "zarr.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # consolidated at the end: no fallback warning
        for sid in (0, 13):
            tilts = xr.open_zarr(store, group=f"samples/{sid:06d}/tilts")
            vol = xr.open_zarr(store, group=f"samples/{sid:06d}/volume")
            parts = xr.open_zarr(store, group=f"samples/{sid:06d}/particles")
            assert set(tilts.data_vars) == {"styled", "noisy", "noiseless"}
            assert tilts.styled.shape == (3, 16, 16) and tilts.tilt_angle.size == 3
            assert "shift_x_px" in tilts.coords  # misalignment drawn and recorded
            assert np.isfinite(tilts.styled.values).all()
            labels = np.unique(vol.class_mask.values)
            assert {1, 2} <= set(labels.tolist())  # ball and rod are labeled
            n_inst = len(np.unique(vol.instance_mask.values)) - 1
            assert parts.sizes["particle"] == n_inst == 3
    attrs = st.read_store_attrs(store)
    assert attrs["weights"]["name"] == "random" and len(attrs["style_references"]) == 2
    assert attrs["sample_builder"] == 2  # the builder version behind the sample bytes


def test_two_runs_give_identical_checksums(two_runs):
    ra, rb = two_runs["a"][0], two_runs["b"][0]
    sa = {s["sample_id"]: s["checksums"] for s in ra.summaries}
    sb = {s["sample_id"]: s["checksums"] for s in rb.summaries}
    assert sa == sb and len(sa) == N
    assert len({c["tilts/styled"] for c in sa.values()}) == N  # samples differ from each other
    # a checksum is of the stored bytes
    data = xr.open_zarr(two_runs["b"][1], group="samples/000004/tilts").styled.values
    assert array_checksum(data) == sb[4]["tilts/styled"]


def test_domain_randomisation_recorded_reproducible_and_covering(two_runs):
    cfg = two_runs["config"]
    store_a, store_b = two_runs["a"][1], two_runs["b"][1]
    inputs = pl.SharedInputs.from_attrs(st.read_store_attrs(store_a))
    combos = set()
    for sid in range(N):
        da = st.read_sample_attrs(store_a, sid)["summary"]["drew"]
        db = st.read_sample_attrs(store_b, sid)["summary"]["drew"]
        drawn = pl.draw(pl.SampleSpec(cfg.seed, sid, cfg, str(store_a), inputs))
        assert da == db == drawn.to_dict()
        combos.add((da["style_reference"], da["noise_model"]))
        assert len(da["shifts_px"]) == 3
    assert combos == {(0, 0), (0, 1), (1, 0), (1, 1)}  # every option is used


def test_one_task_per_sample_and_vgg_loaded_once_per_worker(two_runs):
    report, store, stream, loads = two_runs["a"]
    digest = dataset_digest(two_runs["config"])
    keys = [t["key"] for t in stream if str(t["key"]).startswith("faket-sample-")]
    assert sorted(keys) == sorted(task_key(digest, i) for i in range(N))
    model_key = "random|7|cpu"
    assert len(loads) == 2
    assert all(per_worker.get(model_key) == 1 for per_worker in loads.values())
    assert len({s["worker"] for s in report.summaries}) == 2  # both workers worked
    # one sample at a time per single-threaded worker (nothing inside a task secedes)
    spans: dict[str, list[tuple[str, str]]] = {}
    for sid in range(N):
        attrs = st.read_sample_attrs(store, sid)
        spans.setdefault(attrs["summary"]["worker"], []).append(
            (attrs["started_at"], attrs["summary"]["finished_at"])
        )
    for intervals in spans.values():
        intervals.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(intervals))


def test_failures_are_reported_and_resume_redoes_only_them(dask_client, tmp_path, monkeypatch):
    cfg = tiny_config(
        n_samples=5, style={"enabled": False}, output={"modalities": ["noisy", "noiseless"]}
    )
    store = tmp_path / "f.zarr"
    monkeypatch.setenv("FAKET_DASK_FAULT", "fail:1,3")
    events: list = []
    report = generate(cfg, store, dask_client, GenerateOptions(retries=1, on_event=events.append))
    assert not report.ok and report.n_failed == 2 and report.n_done == 3
    assert sorted(f["sample_id"] for f in report.failures) == [1, 3]
    assert all("injected failure" in f["error"] for f in report.failures)
    # the runner reports every sample once, between "started" and "finished", timed
    kinds = [e.kind for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished" and events[-1].report is report
    assert sorted(e.sample_id for e in events if e.kind == "failed") == [1, 3]
    assert sorted(e.sample_id for e in events if e.kind == "done") == [0, 2, 4]
    assert all("injected failure" in e.message for e in events if e.kind == "failed")
    elapsed = [e.elapsed_s for e in events if e.kind in ("done", "failed")]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    from faket_dask.read.export import store_info

    assert store_info(store)["failed_ids"] == [1, 3]
    monkeypatch.delenv("FAKET_DASK_FAULT")
    events.clear()
    again = generate(cfg, store, dask_client, GenerateOptions(resume=True, on_event=events.append))
    assert again.ok and again.n_skipped == 3
    assert sorted(s["sample_id"] for s in again.summaries) == [1, 3]
    assert events[0].kind == "skipped" and events[0].message.startswith("3 of 5 samples")
    assert st.completed_ids(store, range(5)) == set(range(5))


def test_existing_store_refused_changed_config_named_n_may_grow(dask_client, tmp_path):
    cfg = tiny_config(n_samples=2, style={"enabled": False}, output={"modalities": ["noisy"]})
    store = tmp_path / "e.zarr"
    generate(cfg, store, dask_client)
    with pytest.raises(InputError, match="already exists; pass --resume"):
        generate(cfg, store, dask_client)
    changed = tiny_config(
        n_samples=2,
        style={"enabled": False},
        seed=8,
        noise={"content_factor": 0.5},
        output={"modalities": ["noisy"]},
    )
    with pytest.raises(InputError, match=r"noise\.content_factor.*seed|seed.*content_factor"):
        generate(changed, store, dask_client, GenerateOptions(resume=True))
    grown = generate(cfg, store, dask_client, GenerateOptions(n_samples=4, resume=True))
    assert grown.n_skipped == 2 and sorted(s["sample_id"] for s in grown.summaries) == [2, 3]
    assert st.read_store_attrs(store)["n_samples"] == 4
    # dry run: the plan, nothing computed
    plan = generate(cfg, store, None, GenerateOptions(n_samples=6, resume=True, dry_run=True))
    assert plan.dry_run and plan.plan["n_todo"] == 2 and plan.plan["bytes_per_sample"] > 0
    assert changed_keys({"a": {"b": 1}, "c": 2}, {"a": {"b": 2}, "c": 2}) == ["a.b"]


def test_killed_worker_fails_one_sample_only(tmp_path, monkeypatch):
    import dask
    from distributed import Client, LocalCluster

    cfg = tiny_config(n_samples=3, style={"enabled": False}, output={"modalities": ["noisy"]})
    monkeypatch.setenv("FAKET_DASK_FAULT", "exit:1")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with (
            LocalCluster(
                n_workers=1,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=50,
            ) as cluster,
            Client(cluster, set_as_default=False) as client,
        ):
            report = generate(
                cfg,
                tmp_path / "k.zarr",
                client,
                GenerateOptions(window=1, preload_model=False),
            )
    assert report.n_failed == 1 and report.n_done == 2
    assert "KilledWorker" in report.failures[0]["error"]


def test_scheduler_and_workers_started_as_subprocesses(tmp_path):
    from faket_dask.dist.cluster import connect

    sched_file = tmp_path / "scheduler.json"
    procs = [start_scheduler(scheduler_file=sched_file)]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        procs.append(start_worker(address))
        cfg = tiny_config(n_samples=3)
        with connect(scheduler=address, worker_timeout=60, echo=None) as client:
            report = generate(cfg, tmp_path / "s.zarr", client)
        assert report.ok and report.n_done == 3
        assert st.completed_ids(tmp_path / "s.zarr", range(3)) == {0, 1, 2}
    finally:
        stop_all(procs)


def _executing(client) -> int:
    def count(dask_worker):
        return len(dask_worker.state.executing)

    return sum(client.run(count).values())


def test_client_killed_halfway_then_resume_recomputes_only_the_rest(
    dask_cluster, dask_client, tmp_path
):
    n = 10
    cfg = tiny_config(n_samples=n, style={"enabled": False}, output={"modalities": ["noisy"]})
    cfg_path = tmp_path / "c.yaml"
    save_config(cfg, cfg_path)
    store = tmp_path / "r.zarr"
    env = {**os.environ, "FAKET_DASK_FAULT": "sleep:0.4"}
    proc = start_quiet(
        [
            sys.executable,
            "-m",
            "faket_dask_cli.main",
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
        ],
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if len(st.read_manifest(store)) >= 3 if store.exists() else False:
                break
            assert proc.poll() is None, "the generate subprocess ended early"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    # orphaned tasks may still finish on the workers; wait until they are idle
    deadline = time.monotonic() + 60
    while _executing(dask_client) and time.monotonic() < deadline:
        time.sleep(0.1)
    before = st.completed_ids(store, range(n))
    assert 3 <= len(before) < n
    report = generate(cfg, store, dask_client, GenerateOptions(resume=True))
    assert report.ok and report.n_skipped == len(before)
    ran = {sid for sid in range(n) if st.read_sample_attrs(store, sid)["run_id"] == report.run_id}
    assert ran == set(range(n)) - before
    assert st.completed_ids(store, range(n)) == set(range(n))
    ids = [r["sample_id"] for r in st.read_manifest(store) if r["status"] == "ok"]
    assert sorted(set(ids)) == list(range(n))


def test_a_run_without_workers_warns_once_and_keeps_waiting():
    from distributed import Client, LocalCluster

    from faket_dask.dist.runner import _SchedulerWatch

    messages: list[str] = []
    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        watch = _SchedulerWatch(client, timeout=0.3, every=0.0, warn=messages.append)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not messages:
            assert watch.check() is False  # the same scheduler, still connected
            time.sleep(0.05)
        for _ in range(5):
            watch.check()
    assert len(messages) == 1 and messages[0].startswith("no worker for over 0.3 s")


def test_stray_partial_files_beside_the_groups_are_gone_after_a_run(dask_client, tmp_path):
    """A worker killed while zarr links a group's metadata leaves `samples/zarr.*.partial`."""
    import threading

    cfg = tiny_config(n_samples=4, style={"enabled": False}, output={"modalities": ["noisy"]})
    store = tmp_path / "p.zarr"
    planted: list = []

    def plant() -> None:  # as a killed worker would leave them, while the run goes on
        deadline = time.monotonic() + 60
        while not (store / "samples").is_dir() and time.monotonic() < deadline:
            time.sleep(0.01)
        for folder in (store, store / "samples"):
            stray = folder / "zarr.0123456789abcdef.partial"
            stray.write_text("{")
            planted.append(stray)

    thread = threading.Thread(target=plant)
    thread.start()
    report = generate(cfg, store, dask_client)
    thread.join()
    assert report.ok and len(planted) == 2
    assert not list(store.rglob("*.partial"))
