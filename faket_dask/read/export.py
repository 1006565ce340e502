"""A generated dataset store as a whole: the demo config, ``info`` and ``export``.

(:mod:`faket_dask.io.store` is the layout and its writers; :mod:`faket_dask.dist.runner` fills it.)
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from faket_dask.errors import InputError
from faket_dask.io import TiltSeries, Volume, write_tilt_series, write_volume
from faket_dask.io import store as st
from faket_dask.io.verify import check_sample
from faket_dask.io.writers import array_checksum
from faket_dask.stages.particles import COLUMNS, StarGeometry, to_star

if TYPE_CHECKING:
    import pandas as pd


__all__ = [
    "dataset_attrs",
    "export_sample",
    "read_particle_table",
    "store_info",
]

def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def dataset_attrs(store: str | os.PathLike[str]) -> dict[str, Any]:
    """The shared metadata of a ``generate`` store (root ``attrs["faket_dask"]``).

    Raises
    ------
    InputError
        Not a faket-dask store, or another kind of faket-dask store (``sample build``'s).
    """
    attrs = st.read_store_attrs(store)
    if attrs.get("kind") == "sample":
        raise InputError(
            f"{store} is a `faket-dask sample build` store (one labeled volume with its masks "
            "and particle table), not a dataset from `faket-dask generate`; read it with "
            f"xarray.open_zarr('{store}', group='volume') or faket_dask.io.open_volume"
        )
    return attrs


def store_info(path: str | os.PathLike[str], *, disk_usage: bool = True) -> dict[str, Any]:
    """What a store holds: shared metadata, complete/failed/missing samples, size on disk."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"store {p} does not exist")
    attrs = dataset_attrs(p)
    n = int(attrs.get("n_samples", 0))
    done = st.completed_ids(p, range(n))
    rows = st.read_manifest(p)
    last_status: dict[int, str] = {}
    for r in rows:
        if "sample_id" in r:
            last_status[int(r["sample_id"])] = str(r.get("status"))
    failed = sorted(i for i, s in last_status.items() if s != "ok" and i not in done)
    info = {
        "store": str(p.resolve()),
        "tool_version": attrs.get("tool_version"),
        "created_at": attrs.get("created_at"),
        "config_digest": attrs.get("config_digest"),
        "n_samples": n,
        "complete": len(done),
        "complete_ids": sorted(done),
        "failed_ids": failed,
        "missing_ids": sorted(set(range(n)) - done - set(failed)),
        "weights": attrs.get("weights"),
        "style_references": attrs.get("style_references"),
        "noise_models": attrs.get("noise_models"),
        "last_run": attrs.get("last_run"),
        "config": attrs.get("config"),
    }
    if disk_usage:
        info["bytes_on_disk"] = _dir_size(p)
    return info


def read_particle_table(path: str | os.PathLike[str], sample_id: int) -> pd.DataFrame:
    """A sample's particle table as a DataFrame (string columns decoded, STAR columns first)."""
    return st.read_particles(path, f"{st.sample_group(sample_id)}/particles", COLUMNS)


def _check_outputs(out: Path, overwrite: bool, *, tilts: bool) -> None:
    """Refuse before writing anything if any output (siblings included) exists."""
    if overwrite:
        return
    outs = [out, out.with_suffix(".star")]
    if tilts and out.suffix.lower() != ".zarr":
        outs.append(out.with_suffix(".tlt"))
    for f in outs:
        if f.exists():
            raise InputError(f"{f} exists; pass --overwrite or choose another output")


def _check_bytes(store: Path, sample_id: int, key: str, data: np.ndarray) -> None:
    """Refuse to export a sample whose files are damaged or whose array is not what it recorded."""
    problems, _ = check_sample(store, sample_id, full=False)
    recorded = ((st.read_sample_attrs(store, sample_id) or {}).get("checksums") or {}).get(key)
    if recorded is not None and array_checksum(data) != recorded:
        problems.append(f"array {key} does not match its recorded SHA-256")
    if problems:
        raise InputError(
            f"sample {sample_id} of {store} is damaged ({'; '.join(problems)}); run "
            f"`faket-dask verify {store} --repair`, then generate --resume"
        )


def export_sample(
    path: str | os.PathLike[str],
    sample_id: int,
    modality: str,
    output: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Export one array of a sample as MRC (voxel size in the header) or a Zarr group.

    ``modality`` is a tilt modality (``styled``, ``noisy``...; the ``.tlt`` is written too), or
    ``volume:<array>`` / ``tomogram:<array>`` (``volume:class_mask``, ``tomogram:tomogram``...).
    A STAR file of the sample's particles (volume frame; tomogram frame for ``tomogram:``) is
    written beside the output. Returns the files written.
    """
    p = Path(path)
    dataset_attrs(p)  # a generate store (a sample build store gets its own message)
    if not st.is_complete(p, sample_id):
        state = "incomplete" if st.read_sample_attrs(p, sample_id) else "not in the store"
        raise InputError(f"sample {sample_id} of {p} is {state}; see `faket-dask info {p}`")
    g = st.open_sample(p, sample_id)
    out = Path(output)
    written: list[Path] = []
    grid, _, var = modality.partition(":")
    if not var:
        grid, var = "tilts", modality
    if grid not in ("tilts", "volume", "tomogram"):
        raise InputError(f"--modality {modality!r}: use a tilt modality, volume:X or tomogram:X")
    _check_outputs(out, overwrite, tilts=grid == "tilts")  # all outputs before any is written
    if grid not in g.group_keys():
        raise InputError(f"sample {sample_id} has no {grid} group (not saved by its config)")
    group = st.open_subgroup(g, grid)
    data_names = sorted(name for name, arr in group.arrays() if len(arr.shape) == 3)
    if var not in data_names:
        raise InputError(
            f"sample {sample_id} has no {grid} array {var!r}; it has {', '.join(data_names)}"
        )
    data: npt.NDArray[Any] = np.asarray(st.open_array(group, var)[...])
    _check_bytes(p, sample_id, f"{grid}/{var}", data)
    grid_attrs = st.node_attrs(group)
    spacing = grid_attrs.get("pixel_spacing")
    if grid == "tilts":
        angles = np.asarray(st.open_array(group, "tilt_angle")[...])
        write_tilt_series(out, TiltSeries(data, angles, spacing), var=var, overwrite=overwrite)
        written.append(out)
        if out.suffix.lower() != ".zarr" and out.with_suffix(".tlt").exists():
            written.append(out.with_suffix(".tlt"))
    else:
        write_volume(out, Volume(data, spacing), var=var, overwrite=overwrite)
        written.append(out)
    table = read_particle_table(p, sample_id)
    star = out.with_suffix(".star")
    part_attrs = st.node_attrs(st.open_subgroup(g, "particles"))
    nz, ny, nx = (int(s) for s in part_attrs.get("shape", (0, 0, 0)))
    where = StarGeometry(
        (nz, ny, nx),
        float(part_attrs.get("pixel_spacing", spacing or 1.0)),
        tomo_name=f"sample_{sample_id:06d}",
    )
    if grid == "tomogram":
        bin_ = int(grid_attrs.get("bin", 1))
        thickness = int(grid_attrs.get("thickness") or data.shape[0])
        where = replace(where, frame="tomogram", bin=bin_, tomogram_thickness=thickness)
    to_star(table, star, where)
    written.append(star)
    return written
