"""What a run tells its user (issue 19): recorded throughput that the report repeats, a config
that cannot work (exit 2, no --resume advice), a quiet cluster shutdown, the kind of store,
splits too small to fill."""

from __future__ import annotations

import shutil

import pytest
from _cli import assert_one_line_exit_2, run_cli_checked
from _generate_helpers import tiny_config
from _tiny_store import make_store

import faket_dask
from faket_dask.config import save_config
from faket_dask.dist.runner import generate
from faket_dask.errors import InputError
from faket_dask.read.report import run_throughput
from faket_dask.read.training import PatchDataset

pytestmark = pytest.mark.timeout(240)


def test_report_throughput_is_the_runs_recorded_one(tmp_path, dask_client):
    store = tmp_path / "tp.zarr"
    report = generate(tiny_config(n_samples=3), store, dask_client)
    assert report.n_done == 3
    ds = faket_dask.open_dataset(store)
    last = ds.attrs["last_run"]
    assert last["started_at"] and last["finished_at"] and last["done"] == 3
    tp = run_throughput(ds.attrs, ds.manifest())
    assert tp.source == "recorded"
    assert tp.per_hour == pytest.approx(report.samples_per_hour, rel=1e-3)
    assert tp.done.tolist() == [1.0, 2.0, 3.0]
    # every sample finished inside the recorded run
    assert 0.0 < tp.minutes.min() and tp.minutes.max() <= report.elapsed_s / 60.0 + 0.05


def test_every_sample_failing_on_the_config_is_bad_input(tmp_path, dask_cluster):
    cfg = tiny_config(
        n_samples=2, sample={"particles": [{"name": "big", "template": "builtin:ribosome",
                                            "count": 3}]},
    )
    path = tmp_path / "bad.yaml"
    save_config(cfg, path)
    proc = run_cli_checked(
        "generate", "-c", path, "-o", tmp_path / "bad.zarr", "--no-progress",
        "--scheduler", dask_cluster.scheduler_address, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "all 2 samples failed on the config" in last and "does not fit" in last
    assert "change the config" in last
    assert "--resume" not in proc.stderr and "next: faket-dask report" not in proc.stderr


def test_embedded_cluster_closes_without_killing_workers(tmp_path):
    path = tmp_path / "tiny.yaml"
    save_config(tiny_config(n_samples=1), path)
    proc = run_cli_checked(
        "generate", "-c", path, "-o", tmp_path / "t.zarr", "--no-progress", "--n-workers", 1
    )
    assert "summary" in proc.stderr
    assert "still alive" not in proc.stderr and "killing" not in proc.stderr


def test_info_and_export_name_a_sample_build_store(tmp_path):
    path = tmp_path / "tiny.yaml"
    save_config(tiny_config(), path)
    sample = tmp_path / "sample.zarr"
    run_cli_checked("sample", "build", "-c", path, "-o", sample)
    proc = run_cli_checked("info", sample, check=False)
    assert_one_line_exit_2(proc, "`faket-dask sample build`")
    proc = run_cli_checked(
        "export", sample, "--sample", 0, "-o", tmp_path / "s.mrc", check=False
    )
    assert_one_line_exit_2(proc, "not a dataset from `faket-dask generate`")


def test_split_on_too_few_samples_warns_and_the_empty_split_says_why(tmp_path_factory, tmp_path):
    store = tmp_path / "four.zarr"
    shutil.copytree(make_store(tmp_path_factory.mktemp("split"), n=4), store)
    proc = run_cli_checked("split", store, "--fractions", 0.8, 0.1, 0.1)
    counts = faket_dask.open_dataset(store).splits["ids"]
    empty = [k for k, v in counts.items() if not v]
    assert empty, counts  # 4 samples at 0.1 leave a split empty (the case this test is about)
    for name in empty:
        assert f"warning: {name} has no samples" in proc.stderr
    with pytest.raises(InputError, match=rf"split '{empty[0]}' .* no complete samples .* split"):
        PatchDataset(store, split=empty[0], patch=(4, 4, 4))
