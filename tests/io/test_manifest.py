"""manifest.jsonl: rows whole or not at all, a torn last row set aside, damage one clear line."""

from __future__ import annotations

import json
import warnings

import pytest
from _cli import run_cli

from faket_dask.errors import InputError
from faket_dask.io import store as st


def _rows(path):
    return [json.loads(ln) for ln in (path / st.MANIFEST).read_text().splitlines()]


def test_rows_append_whole_and_latest_status_wins(tmp_path):
    st.write_manifest(tmp_path, [{"sample_id": 0, "status": "ok"}, {"sample_id": 1}])
    st.write_manifest(tmp_path, [])
    st.write_manifest(tmp_path, [{"sample_id": 0, "status": "damaged"}])
    raw = (tmp_path / st.MANIFEST).read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 3
    rows = st.read_manifest(tmp_path)
    assert [r["sample_id"] for r in rows] == [0, 1, 0]
    assert st.latest_status(rows) == {0: "damaged", 1: "ok"}


def test_a_torn_last_row_is_skipped_then_set_aside(tmp_path):
    rows = [{"sample_id": 0, "status": "ok"}, {"sample_id": 1, "status": "ok"}]
    st.write_manifest(tmp_path, rows)
    mpath = tmp_path / st.MANIFEST
    whole = mpath.read_bytes()
    torn = whole[:-9]  # the second row loses its end (and newline)
    mpath.write_bytes(torn)
    with pytest.warns(UserWarning, match="ends in a torn row"):
        assert [r["sample_id"] for r in st.read_manifest(tmp_path)] == [0]
    with pytest.warns(UserWarning, match="set it aside as manifest.jsonl.torn-"):
        st.write_manifest(tmp_path, [{"sample_id": 2, "status": "ok"}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r["sample_id"] for r in st.read_manifest(tmp_path)] == [0, 2]
    (aside,) = tmp_path.glob("manifest.jsonl.torn-*")
    first_row_end = whole.index(b"\n") + 1
    assert aside.read_bytes() == torn[first_row_end:]


def test_a_last_row_whole_but_its_newline_is_kept(tmp_path):
    (tmp_path / st.MANIFEST).write_text('{"sample_id": 0, "status": "ok"}\n{"sample_id": 1}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r["sample_id"] for r in st.read_manifest(tmp_path)] == [0, 1]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"\xff\xfe{}", "not UTF-8 text"),
        (b"[1, 2]", "a JSON list, not an object"),
        (b'{"sample_id": "abc"}', "sample_id 'abc' is not a whole number"),
        (b'{"sample_id": 1.5}', "sample_id 1.5 is not a whole number"),
        (b"{nope", "not JSON"),
    ],
)
def test_damaged_rows_are_one_clear_error(tmp_path, line, why):
    (tmp_path / st.MANIFEST).write_bytes(b'{"sample_id": 0}\n' + line + b'\n{"sample_id": 2}\n')
    with pytest.raises(InputError) as err:
        st.read_manifest(tmp_path)
    msg = str(err.value)
    assert "line 2 is damaged" in msg and why in msg and "verify" in msg and "\n" not in msg


def test_info_on_a_damaged_manifest_is_one_line(tmp_path):
    st.create_store(tmp_path / "d.zarr", {"config": {}, "n_samples": 1})
    (tmp_path / "d.zarr" / st.MANIFEST).write_bytes(b"\xff\n{}\n")
    proc = run_cli("info", tmp_path / "d.zarr", "--json")
    assert proc.returncode == 2, proc.stderr
    assert "line 1 is damaged (not UTF-8 text)" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
