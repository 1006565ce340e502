"""The dataset store: one Zarr v3 store per dataset, one group per sample, a marker written last.

Layout::

    dataset.zarr/
      zarr.json              root attrs["faket_dask"]: config (+ digest), tool version, weights
                             (name + SHA-256), noise models, style references (client only)
      manifest.jsonl         one JSON row per finished sample (appended by the client only)
      inputs/                shared inputs the client materialised (e.g. the demo style reference)
      samples/zarr.json      created by the client
      samples/000000/        created and written by the one worker that computes the sample;
                             attrs: seed, what it drew, checksums, statistics; complete=true LAST
        tilts/    (tilt, y, x)   one array per modality; coordinate tilt_angle (deg), y/x (Å);
                                 shards of tilts_per_shard x full H x full W, inner chunks
                                 (1, chunk, chunk); written one whole shard at a time
        volume/   (z, y, x)      class_mask, instance_mask (and density)
        tomogram/ (z, y, x)      optional reconstruction on its binned grid, with binned masks
        particles/ (particle)    the particle table as columns; attrs["star"] is the STAR text

The arrays are written by :mod:`faket_dask.io.writers`. Grid groups carry OME-Zarr 0.5 ``ome``
attributes describing one primary array (:mod:`faket_dask.io.ome`), so napari opens them. Every
grid group opens with ``xarray.open_zarr(store, group="samples/000000/tilts")``.

Concurrency contract (zarr-python#2729): a worker writes only inside its own ``samples/<id>``
and only whole shards; the client alone writes the root, ``samples/``, ``inputs/`` and the
manifest, and consolidates metadata once at the end. LocalStore writes each object atomically
(``*.partial`` then rename), so a killed worker leaves stray ``.partial`` files and an
incomplete group (no ``complete`` marker) but never a torn chunk; both are removed before the
sample is written again.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from faket_dask.errors import InputError
from faket_dask.io.jsonable import json_default, jsonable

if TYPE_CHECKING:
    import pandas as pd
    import zarr

__all__ = [
    "ATTRS_KEY",
    "MANIFEST",
    "check_writable",
    "completed_ids",
    "consolidate",
    "create_store",
    "is_complete",
    "is_store",
    "latest_status",
    "mark_complete",
    "mark_incomplete",
    "node_attrs",
    "open_array",
    "open_sample",
    "open_subgroup",
    "prepare_sample",
    "read_manifest",
    "read_particles",
    "read_sample_attrs",
    "read_store_attrs",
    "remove_partial_files",
    "sample_group",
    "unconsolidate",
    "update_store_attrs",
    "write_manifest",
]

ATTRS_KEY = "faket_dask"
MANIFEST = "manifest.jsonl"
SAMPLES = "samples"
INPUTS = "inputs"
FORMAT_VERSION = 1

_Node = TypeVar("_Node")


def _zarr() -> Any:
    import zarr  # heavy: imported when a store is opened or written, not by metadata reads

    return zarr


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def sample_group(sample_id: int) -> str:
    """The group path of a sample inside the store: ``samples/000042``."""
    return f"{SAMPLES}/{int(sample_id):06d}"


def _sample_dir(store: str | os.PathLike[str], sample_id: int) -> Path:
    return Path(store) / SAMPLES / f"{int(sample_id):06d}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    tmp.write_text(json.dumps(data, indent=2, default=json_default))
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# The root (client only)
# --------------------------------------------------------------------------------------------


def is_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a faket-dask dataset store (a root with our attrs)."""
    meta = _read_json(Path(path) / "zarr.json")
    return bool(meta and ATTRS_KEY in meta.get("attributes", {}))


def create_store(path: str | os.PathLike[str], attrs: Mapping[str, Any]) -> None:
    """Create the root group, ``samples/`` and ``inputs/`` and write the shared metadata.

    Client only. ``attrs`` go under ``attrs["faket_dask"]`` (with the format version and the
    creation time added). An existing non-empty path is refused.
    """
    p = Path(path)
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise InputError(
            f"store {p} already exists; pass --resume to continue it, or choose a new path"
        )
    if not p.parent.is_dir():
        raise InputError(f"output folder {p.parent} does not exist; create it first")
    zarr = _zarr()
    record = {"format": FORMAT_VERSION, "created_at": _now(), **jsonable(dict(attrs))}
    try:
        root = zarr.open_group(str(p), mode="w", zarr_format=3, attributes={ATTRS_KEY: record})
    except PermissionError:
        raise InputError(f"cannot create store {p}: permission denied") from None
    root.create_group(SAMPLES)
    root.create_group(INPUTS)


def read_store_attrs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The dataset's shared metadata (``attrs["faket_dask"]`` of the root)."""
    meta = _read_json(Path(path) / "zarr.json")
    if meta is None:
        raise InputError(f"{path} is not a Zarr v3 store (no readable zarr.json)")
    attrs = meta.get("attributes", {}).get(ATTRS_KEY)
    if attrs is None:
        raise InputError(f"{path} is a Zarr store but not a faket-dask dataset")
    return dict(attrs)


def write_input_group(root: str | os.PathLike[str], name: str, attrs: Mapping[str, Any]) -> Path:
    """Write an attributes-only group ``name`` (e.g. ``inputs/noise_model_00``) under ``root``.

    The group replaces any old one there; the store stays a clean Zarr v3 hierarchy. Returns
    the group's folder.
    """
    zarr = _zarr()
    zarr.open_group(str(root), path=name, mode="w", zarr_format=3, attributes=dict(attrs))
    return Path(root) / name


def read_group_attrs(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The attributes of the Zarr v3 group at ``path``; ``None`` if it is not one."""
    meta = _read_json(Path(path) / "zarr.json")
    return None if meta is None else dict(meta.get("attributes", {}))


def update_store_attrs(path: str | os.PathLike[str], **values: Any) -> None:
    """Merge ``values`` into the shared metadata (client only)."""
    zarr = _zarr()
    root = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    record = dict(root.attrs.get(ATTRS_KEY, {}))
    record.update(jsonable(values))
    root.attrs[ATTRS_KEY] = record


def consolidate(path: str | os.PathLike[str]) -> None:
    """Write consolidated metadata into the root (client only, once, after the run)."""
    zarr = _zarr()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        # manifest.jsonl is ours, not a zarr node: listing the root notices it
        warnings.filterwarnings("ignore", message=".*not recognized as a component.*")
        zarr.consolidate_metadata(str(path))


def unconsolidate(path: str | os.PathLike[str]) -> None:
    """Remove the root's consolidated metadata (stale once new samples are written)."""
    meta_path = Path(path) / "zarr.json"
    meta = _read_json(meta_path)
    if meta and "consolidated_metadata" in meta:
        meta.pop("consolidated_metadata")
        _write_json_atomic(meta_path, meta)


def remove_partial_files(path: str | os.PathLike[str]) -> int:
    """Delete stray ``*.partial`` files in the root, ``samples/`` and ``inputs/`` (not recursive).

    A group or array created inside a sample briefly writes ``*.partial`` files beside its
    parents' ``zarr.json`` (zarr's exclusive "set if not exists"), so a worker killed at that
    moment leaves one there, outside the sample's own folder. Called when a run starts
    (``--resume``) and when it ends.
    """
    n = 0
    for folder in (Path(path), Path(path) / SAMPLES, Path(path) / INPUTS):
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if entry.name.endswith(".partial") and entry.is_file():
                    with contextlib.suppress(OSError):
                        os.remove(entry.path)
                        n += 1
    return n


def check_writable(path: str | os.PathLike[str]) -> None:
    """Refuse a store this process cannot write (a read-only mount, permissions), before work.

    A probe file in the store and in ``samples/`` (``os.access`` misses read-only mounts).
    """
    for folder in (Path(path), Path(path) / SAMPLES):
        probe = folder / f".faket-write-check-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except FileNotFoundError:
            continue
        except OSError as err:
            raise InputError(
                f"store {path} cannot be written ({err.strerror}: {folder}); it may be on a "
                "read-only mount: copy it somewhere writable, or fix its permissions"
            ) from None


# --------------------------------------------------------------------------------------------
# The manifest (client only)
# --------------------------------------------------------------------------------------------


def _manifest_error(path: Path, lineno: int, why: str) -> InputError:
    return InputError(
        f"{path} line {lineno} is damaged ({why}); run `faket-dask verify {path.parent} "
        "--repair` to set the manifest aside and rebuild it from the samples"
    )


def _parse_row(line: bytes, path: Path, lineno: int) -> dict[str, Any]:
    """One manifest row: a JSON object whose ``sample_id`` is an integer."""
    try:
        row = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise _manifest_error(path, lineno, "not UTF-8 text") from None
    except ValueError:
        raise _manifest_error(path, lineno, "not JSON") from None
    if not isinstance(row, dict):
        raise _manifest_error(path, lineno, f"a JSON {type(row).__name__}, not an object")
    if "sample_id" in row:
        sid = row["sample_id"]
        if isinstance(sid, bool) or not (
            isinstance(sid, int) or (isinstance(sid, str) and sid.strip().isdigit())
        ):
            raise _manifest_error(path, lineno, f"sample_id {sid!r} is not a whole number")
        row["sample_id"] = int(sid)
    return row


def _last_newline(fd: int, size: int) -> int:
    """Offset just after the last newline of the file (0 when there is none)."""
    pos = size
    while pos > 0:
        n = min(65536, pos)
        block = os.pread(fd, n, pos - n)
        i = block.rfind(b"\n")
        if i >= 0:
            return pos - n + i + 1
        pos -= n
    return 0


def _set_aside_torn_tail(fd: int, path: Path) -> int:
    """Move a torn last row (no newline) to ``manifest.jsonl.torn-<time>``; the new size."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    keep = _last_newline(fd, size)
    tail = os.pread(fd, size - keep, keep)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    aside = path.with_name(f"{path.name}.torn-{stamp}")
    aside.write_bytes(tail)
    os.ftruncate(fd, keep)
    warnings.warn(
        f"{path} ended in a torn row ({len(tail)} bytes, from a run killed mid-write); "
        f"set it aside as {aside.name}",
        stacklevel=3,
    )
    return keep


def write_manifest(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Append summary rows (one JSON object per line) to ``manifest.jsonl`` (client only).

    Torn-write safe: the rows go out in one ``write`` on an ``O_APPEND`` descriptor, then
    ``fsync``; a short write (a full disk) is truncated away again, so a row is in the file
    whole or not at all. A torn last row left by a killed writer is set aside first
    (``manifest.jsonl.torn-<time>``), so a new row never joins it. The caller holds the store
    lock (one writer at a time).
    """
    data = "".join(json.dumps(jsonable(dict(r)), sort_keys=True) + "\n" for r in rows).encode()
    if not data:
        return
    mpath = Path(path) / MANIFEST
    fd = os.open(mpath, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = _set_aside_torn_tail(fd, mpath)
        try:
            written = os.write(fd, data)
        except OSError:
            os.ftruncate(fd, size)
            raise
        if written != len(data):
            os.ftruncate(fd, size)
            raise OSError(errno.ENOSPC, f"short write to {mpath} ({written} of {len(data)} B)")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All manifest rows in order.

    A torn last row (no newline: a client killed mid-write) is skipped with a warning; the
    next :func:`write_manifest` sets it aside. Any other damage (a row that is not UTF-8, not
    JSON, not an object, or whose ``sample_id`` is not a whole number) raises.

    Raises
    ------
    InputError
        A damaged row before the last one (one line naming the line and the fix).
    """
    mpath = Path(path) / MANIFEST
    try:
        raw = mpath.read_bytes()
    except FileNotFoundError:
        return []
    except IsADirectoryError:
        raise InputError(f"{mpath} is a directory, not the manifest file") from None
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    rows = [_parse_row(ln, mpath, i) for i, ln in enumerate(lines, 1) if ln.strip()]
    if tail.strip():
        try:
            rows.append(_parse_row(tail, mpath, len(lines) + 1))  # whole but for its newline
        except InputError:
            warnings.warn(
                f"{mpath} ends in a torn row ({len(tail)} bytes, from a run killed "
                "mid-write); it is ignored, and set aside at the next write",
                stacklevel=2,
            )
    return rows


def latest_status(rows: Iterable[Mapping[str, Any]]) -> dict[int, str]:
    """``{sample_id: status of its last row}``: a later row (``damaged``...) overrides ``ok``."""
    out: dict[int, str] = {}
    for r in rows:
        if "sample_id" in r:
            out[int(r["sample_id"])] = str(r.get("status", "ok"))
    return out


# --------------------------------------------------------------------------------------------
# Sample state
# --------------------------------------------------------------------------------------------


def read_sample_attrs(path: str | os.PathLike[str], sample_id: int) -> dict[str, Any] | None:
    """The sample group's attrs, or ``None`` when the group does not exist."""
    meta = _read_json(_sample_dir(path, sample_id) / "zarr.json")
    if meta is None:
        return None
    return dict(meta.get("attributes", {}))


def is_complete(path: str | os.PathLike[str], sample_id: int) -> bool:
    """Whether the sample's ``complete`` marker is set."""
    attrs = read_sample_attrs(path, sample_id)
    return bool(attrs and attrs.get("complete") is True)


def completed_ids(path: str | os.PathLike[str], ids: Iterable[int] | None = None) -> set[int]:
    """Ids of complete samples: those whose ``complete`` marker is set.

    ``ids`` limits the check (default: every sample folder present). The marker, not the
    manifest, decides: a manifest row can outlive its sample's data (a sample marked damaged by
    ``verify --repair``, or rewritten by a run that did not hold the lock).
    """
    root = Path(path)
    if ids is None:
        folder = root / SAMPLES
        try:
            wanted = {int(e.name) for e in os.scandir(folder) if e.name.isdigit() and e.is_dir()}
        except OSError:
            wanted = set()
    else:
        wanted = {int(i) for i in ids}
    return {sid for sid in wanted if is_complete(root, sid)}


def prepare_sample(path: str | os.PathLike[str], sample_id: int, attrs: Mapping[str, Any]) -> Any:
    """Start writing a sample (worker): remove incomplete state, create ``samples/<id>``.

    Any existing *incomplete* group (stray state from a dead worker, stray ``*.partial`` files
    included) is deleted first. Returns the new zarr group, with ``attrs`` and
    ``complete=false``. A *complete* sample must not be prepared again.
    """
    folder = _sample_dir(path, sample_id)
    if is_complete(path, sample_id):
        raise FileExistsError(f"sample {sample_id} in {path} is already complete")
    if folder.exists():
        shutil.rmtree(folder)
    zarr = _zarr()
    record = {**jsonable(dict(attrs)), "sample_id": int(sample_id), "complete": False}
    return zarr.open_group(
        str(path), path=sample_group(sample_id), mode="w", zarr_format=3, attributes=record
    )


def sample_files(folder: Path) -> dict[str, int]:
    """``{path relative to the sample folder: size}`` of every file the sample wrote.

    The sample's own ``zarr.json`` (rewritten by the marker) and stray ``*.partial`` files are
    left out. Recorded in the marker as ``files``: the cheap check that every chunk is there.
    """
    out: dict[str, int] = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, folder).replace(os.sep, "/")
            if rel == "zarr.json" or name.endswith(".partial"):
                continue
            out[rel] = os.stat(full).st_size
    return dict(sorted(out.items()))


def mark_complete(group: Any, attrs: Mapping[str, Any]) -> None:
    """Write the sample's final attrs with ``complete=true``: the last write of a sample.

    The marker also records ``files``: every file of the sample with its size
    (:func:`sample_files`), which ``--resume`` and ``open_dataset`` check cheaply.
    """
    record = dict(group.attrs.asdict())
    record.update(jsonable(dict(attrs)))
    root = getattr(group.store, "root", None)
    if root is not None:
        record["files"] = sample_files(Path(root) / group.path)
    record["complete"] = True
    record["completed_at"] = _now()
    group.attrs.put(record)


def mark_incomplete(path: str | os.PathLike[str], sample_id: int, reason: str) -> None:
    """Clear a damaged sample's ``complete`` marker (client, holding the store lock).

    Its data stays until the task that recomputes it (``--resume``) deletes and rewrites the
    group; ``damaged`` records why.
    """
    meta_path = _sample_dir(path, sample_id) / "zarr.json"
    meta = _read_json(meta_path)
    if meta is None:
        return
    attrs = dict(meta.get("attributes", {}))
    attrs["complete"] = False
    attrs["damaged"] = reason
    meta["attributes"] = attrs
    _write_json_atomic(meta_path, meta)
def open_sample(path: str | os.PathLike[str], sample_id: int) -> zarr.Group:
    """Open a sample's group for reading."""
    group: zarr.Group = _zarr().open_group(
        str(path), path=sample_group(sample_id), mode="r", use_consolidated=False
    )
    return group


def open_array(group: zarr.Group, name: str) -> zarr.Array[Any]:
    """The array ``name`` in ``group``, typed as an array (``group[name]`` may be either).

    Raises :class:`InputError` when ``group`` has no member ``name`` or that member is a group.
    """
    array: zarr.Array[Any] = _member(group, name, _zarr().Array)
    return array


def open_subgroup(group: zarr.Group, name: str) -> zarr.Group:
    """The group ``name`` in ``group``, typed as a group (``group[name]`` may be either).

    Raises :class:`InputError` when ``group`` has no member ``name`` or that member is an array.
    """
    sub: zarr.Group = _member(group, name, _zarr().Group)
    return sub


def _member(group: zarr.Group, name: str, kind: type[_Node]) -> _Node:
    """``group[name]``, which must be a ``kind`` (``zarr.Array`` or ``zarr.Group``)."""
    try:
        member = group[name]
    except KeyError:
        raise InputError(f"{group.store_path} has no member {name!r}") from None
    if not isinstance(member, kind):
        is_array = kind is _zarr().Array
        found, wanted = ("a group", "an array") if is_array else ("an array", "a group")
        raise InputError(f"{group.store_path}/{name} is {found}, expected {wanted}")
    return member


def node_attrs(node: zarr.Array[Any] | zarr.Group) -> dict[str, Any]:
    """A Zarr node's attributes as a plain dict (values as JSON decodes them)."""
    return dict(node.attrs)


def read_particles(
    path: str | os.PathLike[str], group: str = "particles", order: Iterable[str] = ()
) -> pd.DataFrame:
    """A particle table group (written by ``write_particles``) as a DataFrame.

    String columns are decoded from their integer codes. Columns named in ``order`` come first,
    in that order, then the rest as stored.
    """
    import pandas as pd  # heavy: only readers of a table need it

    zarr = _zarr()
    try:
        g = zarr.open_group(str(path), path=group, mode="r", use_consolidated=False)
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        raise InputError(f"{path}: no particle table at group {group!r}") from None
    data: dict[str, npt.NDArray[Any]] = {}
    for key, arr in g.arrays():
        values = np.asarray(arr[...])
        cats = arr.attrs.get("categories")
        if cats is not None:
            values = (
                np.asarray(cats, dtype=object)[values] if len(values) else values.astype(object)
            )
        data[key] = values
    first = [c for c in order if c in data]
    return pd.DataFrame({c: data[c] for c in [*first, *(c for c in data if c not in first)]})
