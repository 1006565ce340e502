"""Check a store's bytes against what its samples recorded, and mark damaged samples for redo.

Every complete sample records the SHA-256 of each array's C-order bytes (attrs ``checksums``,
keys like ``tilts/styled``, ``volume/class_mask``, ``particles/x``) and, since the store lock
came in, every file it wrote with its size (attrs ``files``). Two depths of check:

* cheap (:func:`check_sample` with ``full=False``): the marker, each checksummed array's
  metadata, and every recorded file present with its recorded size. A stat per file: what
  ``generate --resume`` runs on the samples it skips and ``open_dataset`` on the sample it opens.
* full (``full=True``): also re-reads every array and compares its SHA-256. What
  ``faket-dask verify`` and ``export`` run.

:func:`verify_store` checks the manifest against the samples as well; :func:`repair` clears the
marker of each damaged sample and appends a ``damaged`` manifest row, so that
``generate --resume`` regenerates it (byte-identically: a sample is a pure function of the
seed, its id and the config).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faket_dask.errors import InputError
from faket_dask.io import store as st

__all__ = [
    "VerifyReport",
    "array_sha256",
    "check_sample",
    "repair",
    "verify_store",
]

BLOCK_BYTES = 64 * 2**20


@dataclass
class VerifyReport:
    """What :func:`verify_store` found.

    Attributes
    ----------
    damaged
        ``{sample_id: [problem, ...]}`` of complete samples whose bytes or files do not match.
    manifest
        Problems of the manifest against the samples (rows that no sample backs, samples
        without a row, checksums that differ).
    unrecorded
        Complete samples without an ``ok`` manifest row (a client killed before it wrote the
        row; ``--resume`` and ``--repair`` add it).
    """

    store: str
    checked: list[int] = field(default_factory=list)
    damaged: dict[int, list[str]] = field(default_factory=dict)
    manifest: list[str] = field(default_factory=list)
    unrecorded: list[int] = field(default_factory=list)
    bytes_read: int = 0
    elapsed_s: float = 0.0
    full: bool = True
    manifest_unreadable: bool = False

    @property
    def ok(self) -> bool:
        """True when nothing is damaged."""
        return not self.damaged and not self.manifest


def array_sha256(arr: Any) -> tuple[str, int]:
    """``(SHA-256, bytes)`` of a zarr array's C-order bytes, read in blocks along axis 0."""
    h = hashlib.sha256()
    shape = tuple(int(s) for s in arr.shape)
    if not shape or shape[0] == 0:
        data = np.ascontiguousarray(arr[...])
        h.update(data.tobytes())
        return h.hexdigest(), data.nbytes
    row = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(arr.dtype).itemsize
    step = max(1, BLOCK_BYTES // max(1, row))
    n = 0
    for i0 in range(0, shape[0], step):
        block = np.ascontiguousarray(arr[i0 : i0 + step])
        h.update(block.tobytes())
        n += block.nbytes
    return h.hexdigest(), n


def _check_files(folder: Path, files: dict[str, Any]) -> list[str]:
    problems = []
    for rel, size in files.items():
        try:
            actual = os.stat(folder / rel).st_size
        except FileNotFoundError:
            problems.append(f"{rel} is missing")
            continue
        except OSError as err:
            problems.append(f"{rel} cannot be read ({err.strerror})")
            continue
        if actual != int(size):
            problems.append(f"{rel} has {actual} bytes, {size} recorded")
    return problems


def _check_arrays(
    store: Path, sample_id: int, checksums: dict[str, str], full: bool
) -> tuple[list[str], int]:
    folder = store / st.sample_group(sample_id)
    problems: list[str] = []
    nbytes = 0
    group = None
    for key in sorted(checksums):
        if not (folder / key / "zarr.json").is_file():
            problems.append(f"array {key} is missing")
            continue
        if not full:
            continue
        try:
            if group is None:
                group = st.open_sample(store, sample_id)
            digest, n = array_sha256(group[key])
        except Exception as err:  # a corrupt chunk fails its codec: report, do not crash
            problems.append(f"array {key} cannot be read ({type(err).__name__}: {err})")
            continue
        nbytes += n
        if digest != checksums[key]:
            recorded = checksums[key][:12]
            problems.append(f"array {key}: SHA-256 {digest[:12]}..., {recorded}... recorded")
    return problems, nbytes


def check_sample(
    store: str | os.PathLike[str], sample_id: int, *, full: bool = True
) -> tuple[list[str], int]:
    """``(problems, bytes read)`` of one sample; no problems means it is intact.

    A sample that is not marked complete is reported as such (nothing else is checked).
    """
    p = Path(store)
    attrs = st.read_sample_attrs(p, sample_id)
    if attrs is None:
        return ["the sample's group is missing"], 0
    if attrs.get("complete") is not True:
        return ["the sample is not marked complete"], 0
    checksums = attrs.get("checksums")
    if not isinstance(checksums, dict) or not checksums:
        return ["no checksums recorded"], 0
    problems = _check_files(p / st.sample_group(sample_id), dict(attrs.get("files") or {}))
    more, nbytes = _check_arrays(p, sample_id, checksums, full)
    return problems + more, nbytes


def _check_manifest(
    store: Path, complete: set[int], report: VerifyReport, ids: set[int] | None
) -> None:
    try:
        rows = st.read_manifest(store)
    except InputError as err:
        report.manifest.append(str(err))
        report.manifest_unreadable = True
        return
    latest = st.latest_status(rows)
    ok_rows: dict[int, dict[str, Any]] = {}
    for r in rows:
        if "sample_id" in r and r.get("status") == "ok":
            ok_rows[int(r["sample_id"])] = r
    for sid, status in sorted(latest.items()):
        if ids is not None and sid not in ids:
            continue
        if status == "ok" and sid not in complete:
            report.manifest.append(f"manifest row says sample {sid} is ok, but it is not complete")
    for sid in sorted(complete):
        if latest.get(sid) != "ok":
            report.unrecorded.append(sid)
            continue
        row_sums = ok_rows[sid].get("checksums")
        attrs = st.read_sample_attrs(store, sid) or {}
        if isinstance(row_sums, dict) and row_sums != attrs.get("checksums"):
            report.damaged.setdefault(sid, []).append(
                "the manifest's checksums differ from the sample's (written twice?)"
            )


def verify_store(
    store: str | os.PathLike[str],
    ids: Iterable[int] | None = None,
    *,
    full: bool = True,
) -> VerifyReport:
    """Check every complete sample (or ``ids``) and the manifest.

    Parameters
    ----------
    store
        The dataset store.
    ids
        Samples to check (default: every sample folder present).
    full
        Re-read every array and compare its SHA-256 (else the cheap file check only).
    """
    p = Path(store)
    if not p.exists():
        raise InputError(f"store {p} does not exist")
    st.read_store_attrs(p)  # a faket-dask store, or one line
    t0 = time.perf_counter()
    report = VerifyReport(store=str(p), full=full)
    wanted = None if ids is None else {int(i) for i in ids}
    folders = _sample_ids(p) if wanted is None else sorted(wanted)
    complete: set[int] = set()
    for sid in folders:
        if not st.is_complete(p, sid):
            continue
        complete.add(sid)
        report.checked.append(sid)
        problems, nbytes = check_sample(p, sid, full=full)
        report.bytes_read += nbytes
        if problems:
            report.damaged[sid] = problems
    _check_manifest(p, complete, report, wanted)
    report.elapsed_s = time.perf_counter() - t0
    return report


def _sample_ids(store: Path) -> list[int]:
    try:
        entries = os.scandir(store / "samples")
    except OSError:
        return []
    with entries:
        return sorted(int(e.name) for e in entries if e.name.isdigit() and e.is_dir())


def repair(store: str | os.PathLike[str], report: VerifyReport) -> list[int]:
    """Mark each damaged sample incomplete and fix the manifest (hold the store lock).

    Damaged samples get their marker cleared and a ``damaged`` manifest row, so that
    ``generate --resume`` recomputes them; complete samples without a manifest row get one from
    their marker; an unreadable manifest is set aside (``manifest.jsonl.damaged-<time>``) and
    rebuilt from the samples. Returns the ids to regenerate.
    """
    p = Path(store)
    rows: list[dict[str, Any]] = []
    if report.manifest_unreadable:
        rows += _rebuild_manifest(p)
    for sid, problems in sorted(report.damaged.items()):
        st.mark_incomplete(p, sid, "; ".join(problems))
        rows.append({"sample_id": sid, "status": "damaged", "error": "; ".join(problems)})
    for sid in report.unrecorded:
        if sid not in report.damaged:
            rows.append(_ok_row(p, sid))
    for line in report.manifest:
        row_sid = _row_sample(line)
        if row_sid is not None:
            rows.append({"sample_id": row_sid, "status": "damaged", "error": "not complete"})
    st.write_manifest(p, rows)
    return sorted(report.damaged)


def _ok_row(store: Path, sid: int) -> dict[str, Any]:
    attrs = st.read_sample_attrs(store, sid) or {}
    row = dict(attrs.get("summary") or {})
    row.update(sample_id=sid, status="ok", backfilled=True)
    return row


def _row_sample(line: str) -> int | None:
    prefix = "manifest row says sample "
    if line.startswith(prefix):
        return int(line[len(prefix) :].split()[0])
    return None


def _rebuild_manifest(store: Path) -> list[dict[str, Any]]:
    """Set the damaged manifest aside; the ok rows of every complete sample, to write anew."""
    mpath = store / st.MANIFEST
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    if mpath.exists():
        os.replace(mpath, mpath.with_name(f"{mpath.name}.damaged-{stamp}"))
    return [_ok_row(store, sid) for sid in _sample_ids(store) if st.is_complete(store, sid)]
