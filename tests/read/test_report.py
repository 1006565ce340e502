"""The dataset report of a tiny store: realism figures per modality, PNG and HTML pages."""

from __future__ import annotations

import numpy as np
import pytest
from _tiny_store import make_store
from PIL import Image

from faket_dask.errors import InputError
from faket_dask.read import report as rp

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("report"), n=2)


def test_realism_table_covers_each_modality_and_sample(store):
    table = rp.realism_table(store)
    assert set(table) == {"noisy", "baseline", "styled", "noiseless"}
    for rows in table.values():
        assert [r["sample_id"] for r in rows] == [0, 1]
        assert all(0 <= r["histogram_distance"] <= 1 and r["spectrum_distance"] >= 0 for r in rows)
    # the noiseless projection is far from the microscope-like reference, the noisy one closer
    mean = {m: np.mean([r["histogram_distance"] for r in v]) for m, v in table.items()}
    assert mean["noisy"] < mean["noiseless"]


def test_report_png_and_html(store, tmp_path):
    png = rp.report(store, tmp_path / "r.png", dpi=40)
    with Image.open(png) as im:
        assert im.size == (12 * 40, round(7.8 * 40))
    page = rp.report(store, tmp_path / "r.html", dpi=40).read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page
    assert "FAKET" in page and "NOISY" in page and "BASELINE" in page
    with pytest.raises(InputError, match=r"png or \.html"):
        rp.report(store, tmp_path / "r.pdf")


def test_html_report_has_a_section_per_group_particles_realism_and_throughput(store, tmp_path):
    import faket_dask
    from faket_dask.read.report_html import sample_groups

    ds = faket_dask.open_dataset(store)
    groups = sample_groups(ds, ds.ids)
    assert sum(len(v) for v in groups.values()) == len(ds.ids)
    page = rp.report(store, tmp_path / "g.html", dpi=40).read_text()
    assert page.count("<section>") == len(groups)
    for label in groups:
        assert f"<h2>{label}</h2>" in page
    assert page.count("alt='gallery'") == len(groups)
    # the particle summary repeats the particle tables' counts
    total: dict[str, int] = {}
    for sid in ds.ids:
        for name, n in ds.particles(sid)["class_name"].value_counts().items():
            total[str(name)] = total.get(str(name), 0) + int(n)
    for name, n in total.items():
        assert f"<td>{name}</td><td>{n}</td>" in page
    # realism per style reference: one row per (reference, modality)
    assert "<th>style reference</th>" in page and "<td>0</td><td>FAKET</td>" in page
    assert "<h2>Throughput</h2>" in page and "samples/h" in page


def test_throughput_without_a_recorded_run_is_estimated(store):
    import faket_dask

    ds = faket_dask.open_dataset(store)  # written in-process: no last_run
    tp = rp.run_throughput(ds.attrs, ds.manifest())
    assert tp.source == "estimated" and tp.done.tolist() == [1.0, 2.0] and tp.per_hour > 0
