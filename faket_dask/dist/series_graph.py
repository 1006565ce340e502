"""One large tilt-series across a Dask cluster: the stages as Dask array graphs.

``project_zarr`` projects a chunked Zarr volume slab by slab along Y (every Y-slab projects on
its own), ``noise_zarr`` adds noise per tilt block (keyed streams make any block drawable on
any worker), and ``style_zarr`` styles per tilt block as follows.

For a series too large for one GPU (e.g. 61 x 3500²), the stacks are read lazily from chunked
Zarr, and:

1. the global statistics FakET normalises by (per-stack min and max of CONTENT, STYLE and
   NOISY) are computed first, as Dask reductions over all tilt chunks;
2. ``map_blocks`` styles one batch of tilts per task with
   :func:`faket_dask.stages.style.style_transfer` (``ranges=`` the global statistics), VGG-19
   loaded once per worker, Gram matrices cached per worker;
3. each block is written into its own region of a pre-created Zarr array (``dask.array.store``),
   one block per shard, so no two tasks share a shard.

Tilt ``i`` of the result equals tilt ``i`` of the single-process ``style_transfer`` on the whole
stacks (CPU, one torch thread per worker; on GPU within the TF32 tolerance).
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import numpy as np
import torch
import zarr

from faket_dask.errors import InputError
from faket_dask.io.ome import image_attrs
from faket_dask.io.writers import tilt_chunking
from faket_dask.io.zarr_io import (
    TILT_DIMS,
    VOLUME_DIMS,
    is_zarr,
    open_group_dataset,
    pick_variable,
    split_zarr_path,
)
from faket_dask.options import NoiseOptions, ProjectOptions, StyleOptions
from faket_dask.pipeline import get_style_model, gram_cache, resolve_device
from faket_dask.stages.calibrated_noise import (
    CalibratedNoiseOptions,
    apply_calibrated_noise,
    load_noise_model,
)
from faket_dask.stages.calibration import Calibration
from faket_dask.stages.noise import NoiseModel
from faket_dask.stages.noise_apply import NoiseDraw, apply_noise
from faket_dask.stages.projection import project_slab
from faket_dask.stages.style import StyleRun, style_transfer
from faket_dask.stages.style.weights import resolve_weights

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["OutputArray", "noise_zarr", "open_tilts", "project_zarr", "style_zarr"]

Layout = tuple[tuple[int, int, int], tuple[int, int, int]]


@dataclass(frozen=True)
class OutputArray:
    """A stage's output array ``name`` `(T, H, W)` in the Zarr group at ``path``.

    ``angles`` (T,) become the ``tilt_angle`` coordinate; ``spacing`` (Å) the OME scale;
    ``layout`` is ``(chunks, shards)``.
    """

    path: str | os.PathLike[str]
    name: str
    shape: tuple[int, int, int]
    angles: np.ndarray | None
    spacing: float | None
    layout: Layout
    overwrite: bool = False


@dataclass(frozen=True)
class StyleBlockJob:
    """What every style task shares: the global ``ranges``, the model and the batch."""

    ranges: dict[str, tuple[float, float]]
    weights: str
    weights_seed: int
    device: str
    precision: str
    batch_size: int
    style_id: str


def open_tilts(path: str | os.PathLike[str], var: str | None = None) -> tuple[Any, Any, Any]:
    """A Zarr tilt-series as ``(dask array (T, H, W), angles or None, pixel spacing or None)``."""
    path = Path(path)
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
    job: StyleBlockJob,
    block_info: dict | None = None,
) -> np.ndarray:
    """Style one block of tilts on a worker (model and Gram matrices cached per process)."""
    t0 = 0
    if block_info is not None and 0 in block_info:
        t0 = int(block_info[0]["array-location"][0][0])
    dev = resolve_device(job.device)
    model = get_style_model(job.weights, job.weights_seed, dev)
    out = style_transfer(
        torch.from_numpy(np.ascontiguousarray(content, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(style, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(init, dtype=np.float32)),
        model,
        StyleRun(precision=job.precision, batch_size=job.batch_size),
        ranges=job.ranges,
        gram_cache=gram_cache(),
        style_key=f"{job.style_id}:{t0}",  # the cache's tilt index is relative to the block
    )
    return out.cpu().numpy().astype(np.float32, copy=False)


def _open_style_inputs(opts: StyleOptions) -> tuple[Any, Any, Any, Any, Any]:
    """CONTENT, STYLE and INIT as dask arrays in blocks of tilts, with CONTENT's geometry."""
    c, angles, spacing = open_tilts(opts.content, opts.vars.get("content"))
    s, _, _ = open_tilts(opts.style, opts.vars.get("style"))
    x, _, _ = open_tilts(opts.init, opts.vars.get("init"))
    if not (c.shape[0] == s.shape[0] == x.shape[0]):
        raise InputError(
            f"content, style and init need the same tilt count, got "
            f"{c.shape[0]}, {s.shape[0]} and {x.shape[0]}"
        )
    if c.shape != x.shape:
        raise InputError(f"content {c.shape} and init {x.shape} must have one shape")
    b = max(1, int(opts.tilts_per_block))
    return c.rechunk((b, -1, -1)), s.rechunk((b, -1, -1)), x.rechunk((b, -1, -1)), angles, spacing


def _style_weights(weights: str) -> str:
    """The weights spec every worker loads: a path made absolute; ImageNet fetched here once."""
    if weights not in ("imagenet", "random"):
        weights = str(Path(weights).expanduser().resolve())
    if weights == "imagenet":
        resolve_weights("imagenet")  # download once here (or fail clearly), not per worker
    return weights


def style_zarr(opts: StyleOptions, client: Client) -> dict[str, Any]:
    """Style a chunked Zarr tilt-series on a Dask cluster; write ``opts.output`` (a Zarr group).

    Parameters
    ----------
    opts
        Zarr tilt-series groups (CONTENT `(T, H, W)`, the style reference with the same tilt
        count, NOISY as INIT `(T, H, W)`), the output group (array ``styled``), the model and
        precision as :func:`faket_dask.stages.style.style_transfer`, and ``tilts_per_block``:
        tilts per task and per output shard.
    client
        A connected client; the work runs on its workers.

    Returns
    -------
    dict
        ``ranges`` (the global min/max), ``n_blocks``, timings and the output path.
    """
    t_start = time.perf_counter()
    c, s, x, angles, spacing = _open_style_inputs(opts)
    weights = _style_weights(opts.weights)

    # 1. global statistics first, as Dask reductions on the cluster
    t0 = time.perf_counter()
    stats = client.compute([c.min(), c.max(), s.min(), s.max(), x.min(), x.max()], sync=True)
    lo_c, hi_c, lo_s, hi_s, lo_x, hi_x = (float(v) for v in stats)
    ranges = {"content": (lo_c, hi_c), "style": (lo_s, hi_s), "init": (lo_x, hi_x)}
    t_stats = time.perf_counter() - t0

    # 2. the output array, created by the client: one block per shard
    b = max(1, int(opts.tilts_per_block))
    shape = _shape3(c.shape)
    layout = tilt_chunking(shape, b, opts.chunk)
    out = OutputArray(opts.output, "styled", shape, angles, spacing, layout, opts.overwrite)
    target = _create_output(out)
    job = StyleBlockJob(
        ranges,
        weights,
        int(opts.weights_seed),
        opts.device,
        opts.precision,
        int(opts.batch_size),
        style_id=dask.base.tokenize(s),
    )
    styled = da.map_blocks(
        _style_block, c, s, x, job=job, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32)
    )
    # 3. region writes: each block into its own shard
    t0 = time.perf_counter()
    client.compute(da.store(styled, target, lock=False, compute=False), sync=True)
    _consolidate(opts.output)
    t_style = time.perf_counter() - t0
    return {
        "output": str(opts.output),
        "ranges": ranges,
        "n_blocks": int(styled.numblocks[0]),
        "timings": {"stats": t_stats, "style": t_style, "total": time.perf_counter() - t_start},
    }


def _shape3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    t, h, w = (int(v) for v in shape)
    return t, h, w


def _create_output(out: OutputArray) -> Any:
    """Create (or replace, with ``overwrite``) the group and its NaN-filled output array."""
    root, group = split_zarr_path(Path(out.path))
    target_dir = root / group if group else root
    if (target_dir / "zarr.json").exists():
        if not out.overwrite:
            raise InputError(f"{target_dir} exists; pass --overwrite or choose another output")
        shutil.rmtree(target_dir)
    if not root.parent.is_dir():
        raise InputError(f"output folder {root.parent} does not exist; create it first")
    spacing = out.spacing
    attrs = {"pixel_spacing": None if spacing is None else float(spacing), "units": "angstrom"}
    attrs |= image_attrs(out.name, ("tilt", "y", "x"), spacing)
    g = zarr.open_group(str(root), path=group or "", mode="a", zarr_format=3)
    g.attrs.update(attrs)
    coords = []
    if out.angles is not None:
        g.create_array(
            "tilt_angle",
            shape=(len(out.angles),),
            dtype="f8",
            chunks=(len(out.angles),),
            dimension_names=("tilt",),
            attributes={"units": "degree"},
            overwrite=True,
        )[...] = np.asarray(out.angles, "f8")
        coords.append("tilt_angle")
    chunks, shards = out.layout
    return g.create_array(
        out.name,
        shape=out.shape,
        dtype="float32",
        chunks=chunks,
        shards=shards,
        dimension_names=("tilt", "y", "x"),
        fill_value=np.nan,
        attributes={"coordinates": " ".join(coords)} if coords else {},
        overwrite=True,
    )


def _consolidate(path: str | os.PathLike[str]) -> None:
    """Consolidate a standalone output store's metadata, as the local path's ``to_zarr`` does.

    Then ``xarray.open_zarr`` opens it without a warning. A group inside a bigger store is left
    as it is (its store's owner consolidates).
    """
    root, group = split_zarr_path(Path(path))
    if group:
        return
    with warnings.catch_warnings():
        # zarr warns that consolidated metadata is not in the v3 spec; xarray relies on it
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        zarr.consolidate_metadata(str(root))


def _project_block(slab: np.ndarray, *, angles: list[float], width: int, device: str) -> np.ndarray:
    """Project one Y-slab `(Z, y, X)` to `(T, y, W)` on the worker's device."""
    dev = resolve_device(device)
    out = project_slab(
        torch.from_numpy(np.ascontiguousarray(slab, np.float32)).to(dev), angles, width
    )
    return out.cpu().numpy()


def project_zarr(opts: ProjectOptions, client: Client) -> dict[str, Any]:
    """Project a chunked Zarr volume `(Z, Y, X)` on a cluster, one task per Y-slab.

    The output group gets array ``noiseless`` `(T, Y, W)`, one shard per slab of
    ``opts.rows_per_block`` rows, equal to :func:`faket_dask.stages.projection.project` of the
    whole volume.
    """
    t_start = time.perf_counter()
    ds = open_group_dataset(opts.volume)
    name = pick_variable(ds, VOLUME_DIMS, opts.var, opts.volume)
    vol = ds[name].data
    own = ds[name].attrs.get("pixel_spacing", ds.attrs.get("pixel_spacing"))
    spacing = opts.pixel_spacing or own
    _, ny, nx = (int(v) for v in vol.shape)
    width = int(opts.detector_width or nx)
    angles = [float(a) for a in np.asarray(opts.angles_deg)]
    rows = max(1, min(int(opts.rows_per_block), ny))
    vol = vol.rechunk((-1, rows, -1))
    tilts = da.map_blocks(
        _project_block,
        vol,
        angles=angles,
        width=width,
        device=opts.device,
        chunks=((len(angles),), vol.chunks[1], (width,)),
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
    )
    shape = (len(angles), ny, width)
    layout = ((1, rows, width), (len(angles), rows, width))
    out = OutputArray(
        opts.output, "noiseless", shape, np.asarray(angles), spacing, layout, opts.overwrite
    )
    target = _create_output(out)
    client.compute(da.store(tilts, target, lock=False, compute=False), sync=True)
    _consolidate(opts.output)
    return {
        "output": str(opts.output),
        "n_blocks": int(tilts.numblocks[1]),
        "timings": {"total": time.perf_counter() - t_start},
    }


@dataclass(frozen=True)
class NoiseBlockJob:
    """What every noise task of one modality shares: the model, the angles, the stream key.

    ``model_json`` is FakET's noise model, or with ``calibrated`` a calibration (the
    calibrated model, checked against the tilts' ``pixel_spacing`` when known).
    """

    model_json: str
    angles: list[float]
    modality: str
    seed: int
    sample_id: int
    device: str
    calibrated: bool = False
    pixel_spacing: float | None = None


def _noise_block(
    block: np.ndarray, *, job: NoiseBlockJob, block_info: dict | None = None
) -> np.ndarray:
    """One modality for one block of tilts, drawing the keyed streams of those tilts."""
    t0, t1 = block_info[0]["array-location"][0] if block_info else (0, block.shape[0])
    x = torch.from_numpy(np.ascontiguousarray(block, np.float32)).to(resolve_device(job.device))
    if job.calibrated:
        out = apply_calibrated_noise(
            x,
            Calibration.model_validate_json(job.model_json),
            job.angles[t0:t1],
            job.seed,
            job.sample_id,
            CalibratedNoiseOptions(
                modalities=(job.modality,), tilt_offset=t0, pixel_spacing=job.pixel_spacing
            ),
        )
        return out[job.modality].cpu().numpy()
    out = apply_noise(
        x,
        NoiseModel.model_validate_json(job.model_json),
        job.angles[t0:t1],
        seed=job.seed,
        sample_id=job.sample_id,
        options=NoiseDraw(modalities=(job.modality,), tilt_offset=t0),
    )
    return out[job.modality].cpu().numpy()


def noise_zarr(opts: NoiseOptions, client: Client) -> dict[str, Any]:
    """Add noise to a chunked Zarr tilt-series on a cluster, one task per tilt block.

    ``opts.model`` is FakET's noise model or a calibration (the calibrated model).
    ``opts.outputs`` maps modalities (``noisy``, ``content``, ``baseline``) to Zarr groups; each
    equals :func:`faket_dask.stages.noise_apply.apply_noise` with ``rng="keyed"`` (or
    :func:`faket_dask.stages.calibrated_noise.apply_calibrated_noise`) on the whole series.
    """
    t_start = time.perf_counter()
    model = load_noise_model(opts.model)
    x, angles, spacing = open_tilts(opts.noiseless, opts.var)
    if opts.angles_deg is not None:
        angles = np.asarray(opts.angles_deg)
    if angles is None:
        raise InputError(f"{opts.noiseless} has no tilt angles; pass --angles")
    if len(angles) != x.shape[0]:
        raise InputError(f"{opts.noiseless} has {x.shape[0]} tilts but {len(angles)} angles")
    b = max(1, int(opts.tilts_per_block))
    x = x.rechunk((b, -1, -1))
    shape = _shape3(x.shape)
    layout = tilt_chunking(shape, b, opts.chunk)
    stores = []
    for modality, path in opts.outputs.items():
        job = NoiseBlockJob(
            model.model_dump_json(),
            [float(a) for a in angles],
            modality,
            int(opts.seed),
            int(opts.sample_id),
            opts.device,
            calibrated=isinstance(model, Calibration),
            pixel_spacing=None if spacing is None else float(spacing),
        )
        block = da.map_blocks(
            _noise_block, x, job=job, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32)
        )
        out = OutputArray(path, modality, shape, angles, spacing, layout, opts.overwrite)
        stores.append(da.store(block, _create_output(out), lock=False, compute=False))
    client.compute(stores, sync=True)
    for store_path in {str(p) for p in opts.outputs.values()}:
        _consolidate(store_path)
    return {
        "outputs": {k: str(v) for k, v in opts.outputs.items()},
        "n_blocks": int(x.numblocks[0]),
        "timings": {"total": time.perf_counter() - t_start},
    }
