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
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    "completed_ids",
    "consolidate",
    "create_store",
    "is_complete",
    "is_store",
    "mark_complete",
    "open_sample",
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


# --------------------------------------------------------------------------------------------
# The manifest (client only)
# --------------------------------------------------------------------------------------------


def write_manifest(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Append summary rows (one JSON object per line) to ``manifest.jsonl`` (client only)."""
    lines = [json.dumps(jsonable(dict(r)), sort_keys=True) + "\n" for r in rows]
    if not lines:
        return
    with open(Path(path) / MANIFEST, "a", encoding="utf-8") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())


def read_manifest(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All manifest rows in order (a torn last line, from a killed client, is skipped)."""
    rows: list[dict[str, Any]] = []
    try:
        with open(Path(path) / MANIFEST, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
    except FileNotFoundError:
        pass
    return rows


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
    """Ids of complete samples: manifest rows (checked to exist) plus a marker check of the rest.

    ``ids`` limits the check (default: every sample folder present).
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
    in_manifest = {
        int(r["sample_id"])
        for r in read_manifest(root)
        if r.get("status") == "ok" and "sample_id" in r
    }
    done: set[int] = set()
    for sid in wanted:
        if sid in in_manifest:
            if (_sample_dir(root, sid) / "zarr.json").is_file():
                done.add(sid)
        elif is_complete(root, sid):
            done.add(sid)
    return done


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


def mark_complete(group: Any, attrs: Mapping[str, Any]) -> None:
    """Write the sample's final attrs with ``complete=true``: the last write of a sample."""
    record = dict(group.attrs.asdict())
    record.update(jsonable(dict(attrs)))
    record["complete"] = True
    record["completed_at"] = _now()
    group.attrs.put(record)


def open_sample(path: str | os.PathLike[str], sample_id: int) -> zarr.Group:
    """Open a sample's group for reading."""
    group: zarr.Group = _zarr().open_group(
        str(path), path=sample_group(sample_id), mode="r", use_consolidated=False
    )
    return group


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
