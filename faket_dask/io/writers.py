"""Writing a sample's arrays into its Zarr group: tilt stacks, grids and the particle table.

A sample group holds ``tilts/`` ``(tilt, y, x)`` (:class:`TiltsWriter`), ``volume/`` and
``tomogram/`` ``(z, y, x)`` (:class:`GridWriter`, :func:`write_grid`) and ``particles/``
``(particle)`` (:func:`write_particles`); the layout is described in :mod:`faket_dask.io.store`.
Every writer writes whole shards only (a worker owns its sample's shards; zarr-python#2729) and
returns the SHA-256 of each array's stored C-order bytes (:func:`array_checksum`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from faket_dask.io.jsonable import jsonable
from faket_dask.io.ome import grid_ome_attrs

__all__ = [
    "GridWriter",
    "TiltLayout",
    "TiltsWriter",
    "array_checksum",
    "tilt_chunking",
    "write_grid",
    "write_particles",
]

GRID_DIMS = ("z", "y", "x")
_SHARD_BYTES = 1 << 28  # a write_grid shard holds at most 256 MiB
_READ_BACK_BYTES = 1 << 26  # GridWriter reads its arrays back in blocks of 64 MiB


def array_checksum(data: npt.ArrayLike) -> str:
    """SHA-256 of an array's raw bytes (C order), as stored."""
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()


def _round_up(n: int, k: int) -> int:
    return int(math.ceil(n / k) * k)


def tilt_chunking(
    shape: tuple[int, int, int], tilts_per_shard: int, chunk: int
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """``(chunks, shards)`` of a ``(T, H, W)`` array: shards of tilts_per_shard x full H x W."""
    t, h, w = (int(s) for s in shape)
    cy, cx = min(chunk, h), min(chunk, w)
    chunks = (1, cy, cx)
    shards = (max(1, min(int(tilts_per_shard), t)), _round_up(h, cy), _round_up(w, cx))
    return chunks, shards


def _fill(dtype: np.dtype[Any]) -> Any:
    return np.nan if np.issubdtype(dtype, np.floating) else 0


def _coord(group: Any, name: str, values: npt.ArrayLike, dim: str, attrs: dict[str, Any]) -> None:
    arr = np.asarray(values)
    group.create_array(
        name,
        shape=arr.shape,
        dtype=arr.dtype,
        chunks=(max(1, arr.shape[0]),),
        dimension_names=(dim,),
        attributes=attrs,
        fill_value=_fill(arr.dtype),
    )[...] = arr


def _grid_group(
    parent: Any,
    name: str,
    arrays: Iterable[str],
    pixel_spacing: float,
    attrs: Mapping[str, Any] | None,
) -> Any:
    """Create group ``name``: pixel spacing, units, OME-Zarr attributes and ``attrs``."""
    group_attrs: dict[str, Any] = {"pixel_spacing": float(pixel_spacing), "units": "angstrom"}
    group_attrs.update(grid_ome_attrs(name, list(arrays), pixel_spacing))
    group_attrs.update(jsonable(dict(attrs or {})))
    return parent.create_group(name, attributes=group_attrs)


def _spatial_coord(group: Any, dim: str, n: int, pixel_spacing: float) -> None:
    _coord(group, dim, np.arange(n) * float(pixel_spacing), dim, {"units": "angstrom"})


@dataclass(frozen=True)
class TiltLayout:
    """How a ``(T, H, W)`` tilt array is stored.

    Attributes
    ----------
    dtype
        Stored dtype (``float32`` or ``float16``).
    tilts_per_shard
        Shard depth along tilts (a shard spans the whole image).
    chunk
        Inner chunk edge (chunks are ``(1, chunk, chunk)``).
    """

    dtype: str = "float32"
    tilts_per_shard: int = 8
    chunk: int = 512


class TiltsWriter:
    """Write a sample's ``tilts`` group, one whole shard at a time, with running checksums.

    Parameters
    ----------
    parent
        The sample's zarr group.
    modalities
        Array names (``styled``, ``noisy``...).
    shape
        ``(T, H, W)``.
    angles_deg, pixel_spacing
        Coordinates: ``tilt_angle`` (deg) and y/x in Å.
    layout
        Stored dtype, shard depth and chunk edge.
    extra_coords
        More per-tilt coordinates, e.g. ``{"shift_x_px": array (T,)}``.
    attrs
        Group attrs (``pixel_spacing`` is always added).
    """

    def __init__(
        self,
        parent: Any,
        modalities: Iterable[str],
        shape: tuple[int, int, int],
        angles_deg: npt.ArrayLike,
        pixel_spacing: float,
        layout: TiltLayout = TiltLayout(),
        *,
        extra_coords: Mapping[str, npt.ArrayLike] | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        t, h, w = (int(s) for s in shape)
        self.shape = (t, h, w)
        self.dtype = np.dtype(layout.dtype)
        self.chunks, self.shards = tilt_chunking(self.shape, layout.tilts_per_shard, layout.chunk)
        names = list(modalities)
        self.group = _grid_group(parent, "tilts", names, pixel_spacing, attrs)
        extra = dict(extra_coords or {})
        coord_names = ["tilt_angle", *extra]
        _coord(self.group, "tilt_angle", np.asarray(angles_deg, "f8"), "tilt", {"units": "degree"})
        for name, values in extra.items():
            _coord(self.group, name, values, "tilt", {})
        _spatial_coord(self.group, "y", h, pixel_spacing)
        _spatial_coord(self.group, "x", w, pixel_spacing)
        self.arrays: dict[str, Any] = {}
        self._hash: dict[str, Any] = {}
        self._next: dict[str, int] = {}
        for name in names:
            self.arrays[name] = self.group.create_array(
                name,
                shape=self.shape,
                dtype=self.dtype,
                chunks=self.chunks,
                shards=self.shards,
                dimension_names=("tilt", "y", "x"),
                fill_value=_fill(self.dtype),
                attributes={"coordinates": " ".join(coord_names), "modality": name},
            )
            self._hash[name] = hashlib.sha256()
            self._next[name] = 0

    def write(self, name: str, t0: int, data: npt.ArrayLike) -> None:
        """Write tilts ``t0 : t0 + len(data)`` of ``name``: whole shards, in order."""
        step = self.shards[0]
        block = np.ascontiguousarray(np.asarray(data), dtype=self.dtype)
        t = len(block)
        if t0 != self._next[name]:
            expected = self._next[name]
            raise ValueError(f"{name}: tilts must be written in order (expected {expected})")
        if t0 % step or (t % step and t0 + t != self.shape[0]):
            raise ValueError(f"{name}: write whole shards of {step} tilts (got {t0}:{t0 + t})")
        if block.shape[1:] != self.shape[1:]:
            raise ValueError(f"{name}: tilts of {block.shape[1:]}, expected {self.shape[1:]}")
        self.arrays[name][t0 : t0 + t] = block
        self._hash[name].update(block.tobytes())
        self._next[name] = t0 + t

    def write_all(self, name: str, data: npt.NDArray[Any]) -> None:
        """Write a whole ``(T, H, W)`` stack shard by shard."""
        step = self.shards[0]
        for t0 in range(0, self.shape[0], step):
            self.write(name, t0, data[t0 : t0 + step])

    def checksums(self) -> dict[str, str]:
        """SHA-256 of each array's stored bytes (all tilts must be written)."""
        for name, nxt in self._next.items():
            if nxt != self.shape[0]:
                raise ValueError(f"{name}: only {nxt} of {self.shape[0]} tilts written")
        return {name: h.hexdigest() for name, h in self._hash.items()}


class GridWriter:
    """Write a ``(z, y, x)`` grid group slab by slab along Y: whole shards of ``rows`` rows.

    The one writer of every ``(z, y, x)`` grid (``volume``, ``tomogram``, a standalone sample's
    volume). The sample builder renders the volume in Y slabs; each slab is one shard row of
    every array, so the volume is never whole in memory. :meth:`checksums` reads the arrays
    back in Z order (the checksum is of the stored C-order bytes).

    Parameters
    ----------
    parent
        The zarr group to create ``name`` in.
    name
        Group name (``volume``, ``tomogram``).
    shape
        ``(Z, Y, X)``.
    dtypes
        Array name -> stored dtype, in order.
    pixel_spacing
        Å per voxel (coordinates z, y, x in Å).
    rows
        Rows per slab (= per shard along Y); the last slab may be shorter.
    attrs
        Group attrs (``pixel_spacing`` and ``units`` are always added).
    """

    def __init__(
        self,
        parent: Any,
        name: str,
        shape: tuple[int, int, int],
        dtypes: Mapping[str, npt.DTypeLike],
        pixel_spacing: float,
        *,
        rows: int,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        z, y, x = (int(s) for s in shape)
        self.shape = (z, y, x)
        self.rows = int(rows)
        self.group = _grid_group(parent, name, dtypes, pixel_spacing, attrs)
        for dim, n in zip(GRID_DIMS, self.shape, strict=True):
            _spatial_coord(self.group, dim, n, pixel_spacing)
        cz, cx = min(z, 64), min(x, 128)
        if self.rows >= y:
            self.rows = y
            cy = min(y, 128)
            shard_y = _round_up(y, cy)
        else:
            cy = next(c for c in range(min(128, self.rows), 0, -1) if self.rows % c == 0)
            shard_y = self.rows
        self.arrays: dict[str, Any] = {}
        for key, dtype in dtypes.items():
            dt = np.dtype(dtype)
            self.arrays[key] = self.group.create_array(
                key,
                shape=self.shape,
                dtype=dt,
                chunks=(cz, cy, cx),
                shards=(_round_up(z, cz), shard_y, _round_up(x, cx)),
                dimension_names=GRID_DIMS,
                fill_value=_fill(dt),
            )
        self._next = 0

    def write(self, y0: int, slabs: Mapping[str, npt.ArrayLike]) -> None:
        """Write rows ``y0 : y0 + rows`` (the last slab may be shorter) of every array."""
        if y0 != self._next or y0 % self.rows:
            raise ValueError(f"slabs must be written in order, whole shards (got row {y0})")
        n = 0
        for key, arr in self.arrays.items():
            data = np.asarray(slabs[key])
            n = data.shape[1]
            if n != min(self.rows, self.shape[1] - y0):
                raise ValueError(f"{key}: a slab of {n} rows, expected {self.rows}")
            arr[:, y0 : y0 + n] = data
        self._next = y0 + int(n)

    def checksums(self) -> dict[str, str]:
        """SHA-256 of each array's stored bytes, read back in Z order."""
        if self._next != self.shape[1]:
            raise ValueError(f"only {self._next} of {self.shape[1]} rows written")
        out = {}
        plane = self.shape[1] * self.shape[2]
        for key, arr in self.arrays.items():
            h = hashlib.sha256()
            step = max(1, _READ_BACK_BYTES // max(1, plane * arr.dtype.itemsize))
            for z0 in range(0, self.shape[0], step):
                h.update(np.ascontiguousarray(arr[z0 : z0 + step]).tobytes())
            out[key] = h.hexdigest()
        return out


def _grid_rows(shape: tuple[int, int, int], itemsize: int) -> int:
    """Rows per shard of a whole grid: all of Y, or whole 128-row chunks up to 256 MiB."""
    z, y, x = shape
    cz, cy, cx = max(1, min(z, 64)), max(1, min(y, 128)), max(1, min(x, 128))
    zs, xs = _round_up(z, cz), _round_up(x, cx)
    per_chunk_row = max(1, _SHARD_BYTES // max(1, zs * xs * cy * itemsize))
    return min(_round_up(y, cy), per_chunk_row * cy)


def write_grid(
    parent: Any,
    name: str,
    arrays: Mapping[str, npt.ArrayLike],
    pixel_spacing: float,
    attrs: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Write whole ``(z, y, x)`` arrays of one grid as group ``name`` (e.g. ``tomogram``).

    A :class:`GridWriter` whose shards hold at most 256 MiB. Returns the checksum of each array.
    """
    data = {key: np.ascontiguousarray(a) for key, a in arrays.items()}
    shapes = {a.shape for a in data.values()}
    if len(shapes) != 1:
        raise ValueError(f"{name}: arrays of one grid must share a shape, got {sorted(shapes)}")
    (shape,) = shapes
    zyx = (int(shape[0]), int(shape[1]), int(shape[2]))
    itemsize = max(a.dtype.itemsize for a in data.values())
    rows = _grid_rows(zyx, itemsize)
    dtypes = {key: a.dtype for key, a in data.items()}
    writer = GridWriter(parent, name, zyx, dtypes, pixel_spacing, rows=rows, attrs=attrs)
    for y0 in range(0, zyx[1], writer.rows):
        writer.write(y0, {key: a[:, y0 : y0 + writer.rows] for key, a in data.items()})
    return {key: array_checksum(a) for key, a in data.items()}


def write_particles(
    parent: Any,
    columns: Mapping[str, npt.ArrayLike],
    *,
    star: str | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Write the particle table as group ``particles`` with one ``(particle,)`` array per column.

    2-D columns ``(N, k)`` get a second dimension ``<column>_axis``; string columns are stored
    as integer codes with their categories in the array's attrs. ``star`` (the same table as
    RELION STAR text) goes into the group's attrs. Returns the checksum of each column.
    """
    group_attrs = jsonable(dict(attrs or {}))
    if star is not None:
        group_attrs["star"] = star
    group = parent.create_group("particles", attributes=group_attrs)
    lengths = {len(np.asarray(v)) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"particle columns differ in length: {sorted(lengths)}")
    sums: dict[str, str] = {}
    for key, column in columns.items():
        values = np.asarray(column)
        arr_attrs: dict[str, Any] = {}
        if values.dtype.kind in "OUS":
            cats, codes = np.unique(values.astype(str), return_inverse=True)
            values = codes.astype(np.int32)
            arr_attrs["categories"] = cats.tolist()
        dims: tuple[str, ...] = ("particle",) if values.ndim == 1 else ("particle", f"{key}_axis")
        chunks = tuple(max(1, s) for s in values.shape)
        group.create_array(
            key,
            shape=values.shape,
            dtype=values.dtype,
            chunks=chunks,
            dimension_names=dims,
            fill_value=_fill(values.dtype),
            attributes=arr_attrs,
        )[...] = values
        sums[key] = array_checksum(values)
    return sums
