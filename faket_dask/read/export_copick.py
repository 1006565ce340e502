"""Export samples of a store as a copick project (filesystem layout), written with our own code.

copick (the cryo-ET ML tools' data layer) requires zarr < 3, so it is not a dependency; this
module writes its on-disk layout directly, with zarr-python 3 in ``zarr_format=2``::

    PROJECT/
      copick_config.json                 config_type "filesystem", pickable objects, roots
      ExperimentRuns/sample_000000/
        VoxelSpacing20.000/
          wbp.zarr/                       the tomogram: OME-Zarr 0.4 (zarr v2), array "0" (z, y, x)
        Picks/
          faket-dask_0_<class>.json       one file per particle class: locations in Å
        Segmentations/
          20.000_faket-dask_0_classes-multilabel.zarr/   the binned class mask, array "0"

Pick locations are on the tomogram grid (the binned, Z-cropped reconstruction), in Å from its
first voxel: ``location = tomogram voxel coordinate × voxel size`` (the STAR ``tomogram``
frame of :func:`faket_dask.stages.particles.star_coordinates`). Each point's ``transformation_``
holds the particle's rotation matrix (from the table's quaternions) with no shift.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faket_dask.errors import InputError

__all__ = ["USER_ID", "export_copick", "run_name"]

USER_ID = "faket-dask"
SESSION_ID = "0"
_PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]


def run_name(sample_id: int) -> str:
    """The copick run of a sample: ``sample_000042``."""
    return f"sample_{int(sample_id):06d}"


def _write_ome_v2(path: Path, data: np.ndarray, voxel_size: float, name: str) -> None:
    """A single-level OME-Zarr 0.4 image as a zarr v2 group with array ``0`` (z, y, x)."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    chunks = tuple(min(s, 64) for s in data.shape)
    # copick opens stores with key separator "/" (nested chunk keys, as the data portal writes)
    arr = group.create_array(
        "0",
        shape=data.shape,
        dtype=data.dtype,
        chunks=chunks,
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )
    arr[...] = data
    axes = [{"name": a, "type": "space", "unit": "angstrom"} for a in ("z", "y", "x")]
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": name,
            "axes": axes,
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [float(voxel_size)] * 3}
                    ],
                }
            ],
            "metadata": {"source": "faket-dask"},
        }
    ]


def _kind_of_class(name: str) -> str:
    # classes absent from a sample's table: the reserved non-particle classes keep their kind
    return name if name in ("membrane", "fiducial") else "particle"


def _pickable_objects(
    classes: dict[str, str], kinds: dict[str, str], radii: dict[str, float]
) -> list[dict[str, Any]]:
    objs = []
    for label, name in sorted(classes.items(), key=lambda kv: int(kv[0])):
        r, g, b = _PALETTE[(int(label) - 1) % len(_PALETTE)]
        obj: dict[str, Any] = {
            "name": str(name),
            "is_particle": kinds.get(str(name), _kind_of_class(str(name))) == "particle",
            "label": int(label),
            "color": [r, g, b, 255],
        }
        if radii.get(str(name)):
            obj["radius"] = float(radii[str(name)])
        objs.append(obj)
    return objs


def export_copick(
    store: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    sample_ids: Sequence[int] | None = None,
    tomo_type: str = "wbp",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write complete samples' tomograms, picks and class masks as a copick project.

    Parameters
    ----------
    store
        A dataset store whose samples have a ``tomogram`` group (``reconstruction.enabled``).
    output
        The project folder (created; an existing non-empty folder needs ``overwrite``).
    sample_ids
        Samples to export (default: every complete sample).
    tomo_type
        copick tomogram type of the reconstruction (``wbp``: weighted back-projection).

    Returns
    -------
    dict
        ``{"config": path, "runs": n, "picks": n files, "points": n}``.
    """
    from faket_dask.read.access import open_dataset
    from faket_dask.stages.particles import matrices_from_table, star_coordinates

    ds = open_dataset(store)
    ids = list(ds.ids if sample_ids is None else sample_ids)
    if not ids:
        raise InputError(f"{store} has no complete samples to export")
    for sid in ids:
        ds.check_id(sid)
    if not tomo_type.replace("-", "").replace("_", "").isalnum():
        raise InputError(f"--tomo-type {tomo_type!r}: use letters, digits, - and _")
    out = Path(output).resolve()
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"{out} exists and is not empty; pass --overwrite or choose another")
        shutil.rmtree(out)
    if not out.parent.is_dir():
        raise InputError(f"output folder {out.parent} does not exist; create it first")
    out.mkdir(parents=True, exist_ok=True)

    classes: dict[str, str] = {}
    kinds: dict[str, str] = {}
    radii: dict[str, float] = {}
    n_picks = n_points = 0
    spacings: set[float] = set()
    for sid in ids:
        tomo = ds.sample(sid, "tomogram") if _has(ds, sid, "tomogram") else None
        if tomo is None:
            raise InputError(
                f"sample {sid} has no tomogram; copick needs one (set reconstruction.enabled)"
            )
        vol = ds.sample(sid, "volume")
        classes.update({str(k): str(v) for k, v in (vol.attrs.get("classes") or {}).items()})
        vs = float(tomo.attrs["pixel_spacing"])
        spacings.add(vs)
        run_dir = out / "ExperimentRuns" / run_name(sid)
        vs_dir = run_dir / f"VoxelSpacing{vs:.3f}"
        vs_dir.mkdir(parents=True)
        _write_ome_v2(
            vs_dir / f"{tomo_type}.zarr",
            np.asarray(tomo["tomogram"].values, dtype=np.float32),
            vs,
            f"{run_name(sid)} {tomo_type}",
        )
        if "class_mask" in tomo.data_vars:
            seg = run_dir / "Segmentations"
            seg.mkdir()
            _write_ome_v2(
                seg / f"{vs:.3f}_{USER_ID}_{SESSION_ID}_classes-multilabel.zarr",
                np.asarray(tomo["class_mask"].values),
                vs,
                f"{run_name(sid)} classes",
            )
        table = ds.particles(sid)
        part_attrs = _particle_attrs(ds, sid)
        coords = star_coordinates(
            table,
            "tomogram",
            shape=tuple(int(s) for s in part_attrs.get("shape", (0, 0, 0))),
            pixel_spacing=float(part_attrs.get("pixel_spacing", vs)),
            bin=int(tomo.attrs.get("bin", 1)),
            tomogram_thickness=int(tomo.attrs.get("thickness", tomo.sizes["z"])),
        )
        xyz = (
            np.stack(
                [coords["rlnCoordinateX"], coords["rlnCoordinateY"], coords["rlnCoordinateZ"]], 1
            )
            * vs
        )
        mats = matrices_from_table(table) if len(table) else np.zeros((0, 3, 3))
        picks_dir = run_dir / "Picks"
        picks_dir.mkdir()
        for name in sorted(set(table["class_name"])):
            sel = np.flatnonzero(table["class_name"].to_numpy() == name)
            kind = str(table["kind"].iloc[sel[0]])
            kinds[str(name)] = kind
            if "radius_angst" in table and float(table["radius_angst"].iloc[sel[0]]) > 0:
                radii[str(name)] = float(table["radius_angst"].iloc[sel[0]])
            if kind != "particle":
                continue  # membranes and beads are segmentation objects in copick
            points = []
            for i in sel:
                m = np.eye(4)
                m[:3, :3] = mats[i]
                points.append(
                    {
                        "location": {"x": xyz[i, 0], "y": xyz[i, 1], "z": xyz[i, 2]},
                        "transformation_": m.tolist(),
                        "instance_id": int(table["id"].iloc[i]),
                        "score": 1.0,
                    }
                )
            doc = {
                "pickable_object_name": str(name),
                "user_id": USER_ID,
                "session_id": SESSION_ID,
                "run_name": run_name(sid),
                "voxel_spacing": vs,
                "unit": "angstrom",
                "points": points,
                "trust_orientation": True,
            }
            path = picks_dir / f"{USER_ID}_{SESSION_ID}_{name}.json"
            path.write_text(json.dumps(doc, default=_num))
            n_picks += 1
            n_points += len(points)

    config = {
        "config_type": "filesystem",
        "name": f"faket-dask {Path(store).name}",
        "description": f"Synthetic cryo-ET samples exported by faket-dask from {Path(store).name}",
        "version": "0.2.0",
        "pickable_objects": _pickable_objects(classes, kinds, radii),
        "user_id": USER_ID,
        "session_id": SESSION_ID,
        "overlay_root": f"local://{out}",
        "static_root": f"local://{out}",
        "overlay_fs_args": {"auto_mkdir": True},
        "static_fs_args": {},
    }  # no "runs" index: copick would then make index-only runs that cannot list their data
    cfg_path = out / "copick_config.json"
    cfg_path.write_text(json.dumps(config, indent=2))
    return {"config": cfg_path, "runs": len(ids), "picks": n_picks, "points": n_points}


def _has(ds: Any, sample_id: int, grid: str) -> bool:
    return (Path(ds.path) / "samples" / f"{int(sample_id):06d}" / grid / "zarr.json").is_file()


def _particle_attrs(ds: Any, sample_id: int) -> dict[str, Any]:
    meta = Path(ds.path) / "samples" / f"{int(sample_id):06d}" / "particles" / "zarr.json"
    return dict(json.loads(meta.read_text()).get("attributes", {}))


def _num(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(type(obj).__name__)
