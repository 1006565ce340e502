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
