"""One large tilt-series across a Dask cluster: the stages as Dask array graphs.

``project_zarr`` projects a chunked Zarr volume slab by slab along Y (every Y-slab projects on
its own), ``noise_zarr`` adds noise per tilt block (keyed streams make any block drawable on
any worker), and ``style_zarr`` styles per tilt block as follows.

For a series too large for one GPU (e.g. 61 x 3500²), the stacks are read lazily from chunked
Zarr, and:

1. the global statistics FakET normalises by (per-stack min and max of CONTENT, STYLE and
   NOISY) are computed first, as Dask reductions over all tilt chunks;
2. ``map_blocks`` styles one batch of tilts per task with
   :func:`faket_dask.stages.style.style_transfer` (``ranges=`` the global statistics), VGG-19 loaded once
   per worker, Gram matrices cached per worker;
3. each block is written into its own region of a pre-created Zarr array (``dask.array.store``),
   one block per shard, so no two tasks share a shard.

Tilt ``i`` of the result equals tilt ``i`` of the single-process ``style_transfer`` on the whole
stacks (CPU, one torch thread per worker; on GPU within the TF32 tolerance).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faket_dask.errors import InputError

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["noise_zarr", "open_tilts", "project_zarr", "style_zarr"]


def open_tilts(path: str | os.PathLike[str], var: str | None = None) -> tuple[Any, Any, Any]:
    """A Zarr tilt-series as ``(dask array (T, H, W), angles or None, pixel spacing or None)``."""
    from faket_dask.io.zarr_io import TILT_DIMS, is_zarr, open_group_dataset, pick_variable

    if not is_zarr(path):
        raise InputError(f"{path}: the distributed path needs chunked Zarr input (.zarr)")
    ds = open_group_dataset(path)
    name = pick_variable(ds, TILT_DIMS, var, path)
    arr = ds[name].data
    angles = ds["tilt_angle"].values if "tilt_angle" in ds.coords else None
    spacing = ds[name].attrs.get("pixel_spacing", ds.attrs.get("pixel_spacing"))
    return arr, angles, spacing


def _style_block(
    content: np.ndarray,
    style: np.ndarray,
    init: np.ndarray,
    *,
    ranges: dict[str, tuple[float, float]],
    weights: str,
    weights_seed: int,
    device: str,
    precision: str,
    batch_size: int,
    style_id: str,
    block_info: dict | None = None,
) -> np.ndarray:
    """Style one block of tilts on a worker (model and Gram matrices cached per process)."""
    import torch

    from faket_dask.pipeline import get_style_model, gram_cache, resolve_device
    from faket_dask.stages.style import style_transfer

    t0 = 0
    if block_info is not None and 0 in block_info:
        t0 = int(block_info[0]["array-location"][0][0])
    dev = resolve_device(device)
    model = get_style_model(weights, weights_seed, dev)
    out = style_transfer(
        torch.from_numpy(np.ascontiguousarray(content, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(style, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(init, dtype=np.float32)),
        model,
        precision=precision,
        batch_size=batch_size,
        ranges=ranges,
        gram_cache=gram_cache(),
        style_key=f"{style_id}:{t0}",  # the cache's tilt index is relative to the block
    )
    return out.cpu().numpy().astype(np.float32, copy=False)


def style_zarr(
    content: str | os.PathLike[str],
    style: str | os.PathLike[str],
    init: str | os.PathLike[str],
    output: str | os.PathLike[str],
    client: Client,
    *,
    weights: str = "imagenet",
    weights_seed: int = 0,
    precision: str = "fp32",
    batch_size: int = 4,
    device: str = "auto",
    tilts_per_block: int = 8,
    chunk: int = 512,
    content_var: str | None = None,
    style_var: str | None = None,
    init_var: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Style a chunked Zarr tilt-series on a Dask cluster; write ``output`` (a Zarr group).

    Parameters
    ----------
    content, style, init
        Zarr tilt-series groups (CONTENT, the style reference with the same tilt count, NOISY).
    output
        The output group (``.zarr`` path, optionally with a group inside), array ``styled``.
    client
        A connected client; the work runs on its workers.
    weights, weights_seed, precision, batch_size, device
        As :func:`faket_dask.stages.style.style_transfer` / :func:`faket_dask.stages.style.weights.load_vgg19`.
    tilts_per_block
        Tilts per task and per output shard.

    Returns
    -------
    dict
        ``ranges`` (the global min/max), ``n_blocks``, timings and the output path.
    """
    import dask
    import dask.array as da

    from faket_dask.io.zarr_io import split_zarr_path
    from faket_dask.stages.style.weights import resolve_weights

    t_start = time.perf_counter()
    c, angles, spacing = open_tilts(content, content_var)
    s, _, _ = open_tilts(style, style_var)
    x, _, _ = open_tilts(init, init_var)
    if not (c.shape[0] == s.shape[0] == x.shape[0]):
        raise InputError(
            f"content, style and init need the same tilt count, got "
            f"{c.shape[0]}, {s.shape[0]} and {x.shape[0]}"
        )
    if c.shape != x.shape:
        raise InputError(f"content {c.shape} and init {x.shape} must have one shape")
    if weights not in ("imagenet", "random"):
        weights = str(Path(weights).expanduser().resolve())
    if weights == "imagenet":
        resolve_weights("imagenet")  # download once here (or fail clearly), not per worker
    b = max(1, int(tilts_per_block))
    c = c.rechunk((b, -1, -1))
    s = s.rechunk((b, -1, -1))
    x = x.rechunk((b, -1, -1))

    # 1. global statistics first, as Dask reductions on the cluster
    t0 = time.perf_counter()
    stats = client.compute([c.min(), c.max(), s.min(), s.max(), x.min(), x.max()], sync=True)
    lo_c, hi_c, lo_s, hi_s, lo_x, hi_x = (float(v) for v in stats)
    ranges = {"content": (lo_c, hi_c), "style": (lo_s, hi_s), "init": (lo_x, hi_x)}
    t_stats = time.perf_counter() - t0

    # 2. the output array, created by the client: one block per shard
    root, group = split_zarr_path(output)
    target = _create_output(root, group, c.shape, angles, spacing, b, chunk, overwrite)
    style_id = dask.base.tokenize(s)
    styled = da.map_blocks(
        _style_block,
        c,
        s,
        x,
        ranges=ranges,
        weights=weights,
        weights_seed=int(weights_seed),
        device=device,
        precision=precision,
        batch_size=int(batch_size),
        style_id=style_id,
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
    )
    # 3. region writes: each block into its own shard
    t0 = time.perf_counter()
    stored = da.store(styled, target, lock=False, compute=False)
    client.compute(stored, sync=True)
    t_style = time.perf_counter() - t0
    return {
        "output": str(output),
        "ranges": ranges,
        "n_blocks": int(styled.numblocks[0]),
        "timings": {"stats": t_stats, "style": t_style, "total": time.perf_counter() - t_start},
    }


def _create_output(
    root: Path,
    group: str | None,
    shape: tuple[int, int, int],
    angles: Any,
    spacing: Any,
    tilts_per_block: int,
    chunk: int,
    overwrite: bool,
    name: str = "styled",
    layout: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
) -> Any:
    import shutil

    import zarr

    from faket_dask.io.ome import image_attrs
    from faket_dask.io.store import tilt_chunking

    target_dir = root / group if group else root
    if (target_dir / "zarr.json").exists():
        if not overwrite:
            raise InputError(f"{target_dir} exists; pass --overwrite or choose another output")
        shutil.rmtree(target_dir)
    if not root.parent.is_dir():
        raise InputError(f"output folder {root.parent} does not exist; create it first")
    attrs = {"pixel_spacing": None if spacing is None else float(spacing), "units": "angstrom"}
    attrs |= image_attrs(name, ("tilt", "y", "x"), spacing)
    g = zarr.open_group(str(root), path=group or "", mode="a", zarr_format=3)
    g.attrs.update(attrs)
    coords = []
    if angles is not None:
        g.create_array(
            "tilt_angle",
            shape=(len(angles),),
            dtype="f8",
            chunks=(len(angles),),
            dimension_names=("tilt",),
            attributes={"units": "degree"},
            overwrite=True,
        )[...] = np.asarray(angles, "f8")
        coords.append("tilt_angle")
    if layout is None:
        layout = tilt_chunking(tuple(int(v) for v in shape), tilts_per_block, chunk)
    chunks, shards = layout
    return g.create_array(
        name,
        shape=tuple(int(v) for v in shape),
        dtype="float32",
        chunks=chunks,
        shards=shards,
        dimension_names=("tilt", "y", "x"),
        fill_value=np.nan,
        attributes={"coordinates": " ".join(coords)} if coords else {},
        overwrite=True,
    )


def _project_block(slab: np.ndarray, *, angles: list[float], width: int, device: str) -> np.ndarray:
    """Project one Y-slab `(Z, y, X)` to `(T, y, W)` on the worker's device."""
    import torch

    from faket_dask.pipeline import resolve_device
    from faket_dask.stages.projection import project_slab

    dev = resolve_device(device)
    out = project_slab(
        torch.from_numpy(np.ascontiguousarray(slab, np.float32)).to(dev), angles, width
    )
    return out.cpu().numpy()


def project_zarr(
    volume: str | os.PathLike[str],
    output: str | os.PathLike[str],
    angles_deg: np.ndarray,
    client: Client,
    *,
    detector_width: int | None = None,
    pixel_spacing: float | None = None,
    rows_per_block: int = 64,
    device: str = "auto",
    var: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Project a chunked Zarr volume `(Z, Y, X)` on a cluster, one task per Y-slab.

    The output group gets array ``noiseless`` `(T, Y, W)`, one shard per slab, equal to
    :func:`faket_dask.stages.projection.project` of the whole volume.
    """
    import dask.array as da

    from faket_dask.io.zarr_io import (
        VOLUME_DIMS,
        open_group_dataset,
        pick_variable,
        split_zarr_path,
    )

    t_start = time.perf_counter()
    ds = open_group_dataset(volume)
    name = pick_variable(ds, VOLUME_DIMS, var, volume)
    vol = ds[name].data
    spacing = pixel_spacing or ds[name].attrs.get("pixel_spacing", ds.attrs.get("pixel_spacing"))
    _, ny, nx = (int(v) for v in vol.shape)
    width = int(detector_width or nx)
    angles = [float(a) for a in np.asarray(angles_deg)]
    rows = max(1, min(int(rows_per_block), ny))
    vol = vol.rechunk((-1, rows, -1))
    tilts = da.map_blocks(
        _project_block,
        vol,
        angles=angles,
        width=width,
        device=device,
        chunks=((len(angles),), vol.chunks[1], (width,)),
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
    )
    root, group = split_zarr_path(output)
    shape = (len(angles), ny, width)
    layout = ((1, rows, width), (len(angles), rows, width))
    target = _create_output(
        root, group, shape, angles, spacing, 1, 0, overwrite, name="noiseless", layout=layout
    )
    client.compute(da.store(tilts, target, lock=False, compute=False), sync=True)
    return {
        "output": str(output),
        "n_blocks": int(tilts.numblocks[1]),
        "timings": {"total": time.perf_counter() - t_start},
    }


def _noise_block(
    block: np.ndarray,
    *,
    model_json: str,
    angles: list[float],
    modality: str,
    seed: int,
    sample_id: int,
    device: str,
    block_info: dict | None = None,
) -> np.ndarray:
    """One modality for one block of tilts, drawing the keyed streams of those tilts."""
    import torch

    from faket_dask.stages.noise import NoiseModel, apply_noise
    from faket_dask.pipeline import resolve_device

    t0, t1 = block_info[0]["array-location"][0] if block_info else (0, block.shape[0])
    model = NoiseModel.model_validate_json(model_json)
    x = torch.from_numpy(np.ascontiguousarray(block, np.float32)).to(resolve_device(device))
    out = apply_noise(
        x,
        model,
        angles[t0:t1],
        seed=seed,
        sample_id=sample_id,
        modalities=(modality,),
        tilt_offset=t0,
    )
    return out[modality].cpu().numpy()


def noise_zarr(
    noiseless: str | os.PathLike[str],
    model: Any,
    outputs: dict[str, str | os.PathLike[str]],
    client: Client,
    *,
    angles_deg: np.ndarray | None = None,
    seed: int = 0,
    sample_id: int = 0,
    tilts_per_block: int = 8,
    chunk: int = 512,
    device: str = "auto",
    var: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Add FakET's noise to a chunked Zarr tilt-series on a cluster, one task per tilt block.

    ``outputs`` maps modalities (``noisy``, ``content``, ``baseline``) to Zarr groups; each equals
    :func:`faket_dask.stages.noise.apply_noise` with ``rng="keyed"`` on the whole series.
    """
    import dask.array as da

    from faket_dask.io.zarr_io import split_zarr_path

    t_start = time.perf_counter()
    x, angles, spacing = open_tilts(noiseless, var)
    if angles_deg is not None:
        angles = np.asarray(angles_deg)
    if angles is None:
        raise InputError(f"{noiseless} has no tilt angles; pass --angles")
    if len(angles) != x.shape[0]:
        raise InputError(f"{noiseless} has {x.shape[0]} tilts but {len(angles)} angles")
    b = max(1, int(tilts_per_block))
    x = x.rechunk((b, -1, -1))
    stores = []
    for modality, path in outputs.items():
        block = da.map_blocks(
            _noise_block,
            x,
            model_json=model.model_dump_json(),
            angles=[float(a) for a in angles],
            modality=modality,
            seed=int(seed),
            sample_id=int(sample_id),
            device=device,
            dtype=np.float32,
            meta=np.empty((0, 0, 0), np.float32),
        )
        root, group = split_zarr_path(path)
        target = _create_output(
            root, group, tuple(x.shape), angles, spacing, b, chunk, overwrite, name=modality
        )
        stores.append(da.store(block, target, lock=False, compute=False))
    client.compute(stores, sync=True)
    return {
        "outputs": {k: str(v) for k, v in outputs.items()},
        "n_blocks": int(x.numblocks[0]),
        "timings": {"total": time.perf_counter() - t_start},
    }
