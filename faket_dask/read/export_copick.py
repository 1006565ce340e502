"""Export samples of a store as a copick project (filesystem layout), written with our own code.

copick (the cryo-ET ML tools' data layer) requires zarr < 3, so it is not a dependency; this
module writes its on-disk layout directly, with zarr-python 3 in ``zarr_format=2``::

    PROJECT/
      copick_config.json                 config_type "filesystem", objects, one root
      ExperimentRuns/sample_000000/
        VoxelSpacing20.000/
          wbp.zarr/                       the tomogram: OME-Zarr 0.4 (zarr v2), levels 0, 1, 2
        Segmentations/
          20.000_faket-dask_0_classes-multilabel.zarr/   the binned class mask, labels = class ids
        Picks/
          faket-dask_0_<class>.json       one file per particle class: locations in Å

The config names one root only (``overlay_root``; no ``static_root``, so copick does not list
every file twice). By default it is ``local://.``, the folder copick is opened from: a copied
or moved project opens when read from its own folder (``cd PROJECT`` then
``copick.from_file("copick_config.json")``). ``root`` writes any other fsspec URL instead
(an absolute path, ``s3://bucket/project``...).

Objects carry the store's class ids as ``label`` (the values of the multilabel mask), a colour,
``radius`` in Å (the template's extent from its centre, or the vesicle/bead radius) and
``pdb_id`` when the class's template is an atomic model with an entry id.

Pick locations are on the tomogram grid (the binned, Z-cropped reconstruction), in Å from its
first voxel's centre: ``location = tomogram voxel coordinate × voxel size`` (the STAR
``tomogram`` frame of :func:`faket_dask.stages.particles.star_coordinates`). Each point's
``transformation_`` holds the particle's rotation matrix (from the table's quaternions; it
turns the template into the particle, acting on (x, y, z)) with no shift.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faket_dask.errors import InputError
from faket_dask.io.ome import label_colour
from faket_dask.read.export_ngff import (
    class_names,
    has_grid,
    prepare_output,
    samples_to_export,
    write_ngff04_image,
)
from faket_dask.stages.particles import matrices_from_table, star_coordinates
from faket_dask.stages.templates import is_atomic_model, load_template, read_atoms

__all__ = ["SESSION_ID", "USER_ID", "export_copick", "run_name"]

USER_ID = "faket-dask"
SESSION_ID = "0"
_PDB_ID = re.compile(r"^[0-9][A-Za-z0-9]{3}$")


def run_name(sample_id: int) -> str:
    """The copick run of a sample: ``sample_000042``."""
    return f"sample_{int(sample_id):06d}"


def _kind_of_class(name: str) -> str:
    # classes absent from a sample's table: the reserved non-particle classes keep their kind
    return name if name in ("membrane", "fiducial") else "particle"


def _pdb_ids(ds: Any) -> dict[str, str]:
    """``{class name: PDB id}`` for classes whose template is an atomic model with an id."""
    out: dict[str, str] = {}
    for c in ds.config.sample.resolved_particles():
        if not is_atomic_model(c.template) or c.template.startswith("example:"):
            continue
        path = Path(c.template).expanduser()
        entry = None
        for cand in (path, Path(ds.path).parent / path):
            if cand.is_file():
                try:
                    entry = read_atoms(cand).entry_id
                except InputError:
                    entry = None
                break
        stem = Path(path.name.lower().removesuffix(".gz")).stem
        entry = entry or (stem if _PDB_ID.match(stem) else None)
        if entry:
            out[c.name] = entry.upper()
    return out


def _pickable_objects(classes: dict[int, str], info: dict[str, dict[str, Any]]) -> list[dict]:
    objs = []
    for label, name in sorted(classes.items()):
        meta = info.get(name, {})
        obj: dict[str, Any] = {
            "name": name,
            "is_particle": meta.get("kind", _kind_of_class(name)) == "particle",
            "label": int(label),
            "color": list(label_colour(label)),
        }
        for key in ("radius", "pdb_id"):
            if meta.get(key):
                obj[key] = meta[key]
        objs.append(obj)
    return objs


def _tomogram_xyz(ds: Any, sid: int, table: Any, tomo: Any) -> np.ndarray:
    """``(N, 3)`` particle positions (x, y, z) in Å on the tomogram grid."""
    meta = Path(ds.path) / "samples" / f"{int(sid):06d}" / "particles" / "zarr.json"
    part = dict(json.loads(meta.read_text()).get("attributes", {}))
    vs = float(tomo.attrs["pixel_spacing"])
    nz, ny, nx = (int(s) for s in part.get("shape", (0, 0, 0)))
    coords = star_coordinates(
        table,
        "tomogram",
        shape=(nz, ny, nx),
        pixel_spacing=float(part.get("pixel_spacing", vs)),
        bin=int(tomo.attrs.get("bin", 1)),
        tomogram_thickness=int(tomo.attrs.get("thickness", tomo.sizes["z"])),
    )
    return np.stack([coords[f"rlnCoordinate{a}"] for a in "XYZ"], 1) * vs


def _write_picks(run_dir: Path, sid: int, table: Any, xyz: np.ndarray, vs: float) -> list[int]:
    """One pick file per particle class; returns the number of points of each file."""
    mats = matrices_from_table(table) if len(table) else np.zeros((0, 3, 3))
    picks_dir = run_dir / "Picks"
    picks_dir.mkdir()
    counts = []
    parts = table[table["kind"] == "particle"]
    for name in sorted(set(parts["class_name"])):
        points = []
        for i in np.flatnonzero(table["class_name"].to_numpy() == name):
            m = np.eye(4)
            m[:3, :3] = mats[i]
            loc = {"x": float(xyz[i, 0]), "y": float(xyz[i, 1]), "z": float(xyz[i, 2])}
            points.append(
                {
                    "location": loc,
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
        (picks_dir / f"{USER_ID}_{SESSION_ID}_{name}.json").write_text(json.dumps(doc))
        counts.append(len(points))
    return counts


def _class_info(table: Any, info: dict[str, dict[str, Any]], radii: dict[str, float]) -> None:
    for name in sorted(set(table["class_name"])):
        rows = table[table["class_name"] == name]
        meta = info.setdefault(str(name), {})
        meta["kind"] = str(rows["kind"].iloc[0])
        r = float(rows["radius_angst"].max()) if "radius_angst" in rows else 0.0
        r = r if r > 0 else radii.get(str(name), 0.0)
        if r > 0:
            meta["radius"] = max(r, float(meta.get("radius", 0.0)))


def _export_run(
    ds: Any, sid: int, out: Path, tomo_type: str, info: dict, radii: dict[str, float]
) -> list[int]:
    """Write one sample's run; returns the point count of each pick file."""
    tomo = ds.sample(sid, "tomogram")
    vs = float(tomo.attrs["pixel_spacing"])
    run_dir = out / "ExperimentRuns" / run_name(sid)
    vs_dir = run_dir / f"VoxelSpacing{vs:.3f}"
    vs_dir.mkdir(parents=True)
    data = np.asarray(tomo["tomogram"].values, dtype=np.float32)
    write_ngff04_image(vs_dir / f"{tomo_type}.zarr", data, vs, f"{run_name(sid)} {tomo_type}")
    classes = class_names(ds, sid)
    if "class_mask" in tomo.data_vars:
        seg = run_dir / "Segmentations"
        seg.mkdir()
        mask = np.asarray(tomo["class_mask"].values)
        name = f"{vs:.3f}_{USER_ID}_{SESSION_ID}_classes-multilabel.zarr"
        write_ngff04_image(seg / name, mask, vs, f"{run_name(sid)} classes", label_image=classes)
    table = ds.particles(sid)
    _class_info(table, info, radii)
    return _write_picks(run_dir, sid, table, _tomogram_xyz(ds, sid, table, tomo), vs)


def _template_radii(ds: Any) -> dict[str, float]:
    """``{class name: radius in Å}``: each template's extent, ``(radius_px + 0.5) × spacing``.

    ``radius_px`` is the largest distance from the centre to a voxel inside the contour; the
    half voxel reaches that voxel's edge (a one-voxel template has a radius of half a voxel).

    Templates are loaded as the sample builder loads them (a file template that is no longer
    where the config says is skipped: its object then has no radius).
    """
    cfg = ds.config
    ps = float(cfg.tilts.pixel_spacing)
    out: dict[str, float] = {}
    for c in cfg.sample.resolved_particles():
        src = c.template
        if not src.startswith(("builtin:", "example:")) and not Path(src).is_file():
            src = str(Path(ds.path).parent / src)
        try:
            t = load_template(
                src,
                ps,
                name=c.name,
                threshold=c.threshold,
                density=c.density,
                source_pixel_spacing=c.pixel_spacing,
            )
        except InputError:
            continue
        out[c.name] = round((float(t.radius_px) + 0.5) * ps, 3)
    return out


def export_copick(
    store: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    sample_ids: Sequence[int] | None = None,
    tomo_type: str = "wbp",
    overwrite: bool = False,
    root: str | None = None,
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
    root
        The project's root URL in the config (default ``local://.``: the folder the project is
        opened from, so a copied project opens from its own folder).

    Returns
    -------
    dict
        ``{"config": path, "runs": n, "picks": n files, "points": n}``.
    """
    ds, ids = samples_to_export(store, sample_ids)
    for sid in ids:
        if not has_grid(ds, sid, "tomogram"):
            raise InputError(
                f"sample {sid} has no tomogram; copick needs one (set reconstruction.enabled)"
            )
    if not tomo_type.replace("-", "").replace("_", "").isalnum():
        raise InputError(f"--tomo-type {tomo_type!r}: use letters, digits, - and _")
    out = prepare_output(output, overwrite)
    info: dict[str, dict[str, Any]] = {}
    counts: list[int] = []
    classes: dict[int, str] = {}
    radii = _template_radii(ds)
    for sid in ids:
        counts += _export_run(ds, sid, out, tomo_type, info, radii)
        classes.update(class_names(ds, sid))
    for name, pdb in _pdb_ids(ds).items():
        info.setdefault(name, {})["pdb_id"] = pdb
    config = {
        "config_type": "filesystem",
        "name": f"faket-dask {Path(store).name}",
        "description": f"Synthetic cryo-ET samples exported by faket-dask from {Path(store).name}",
        "version": "0.2.0",
        "pickable_objects": _pickable_objects(classes, info),
        "user_id": USER_ID,
        "session_id": SESSION_ID,
        "overlay_root": root or "local://.",
        "overlay_fs_args": {"auto_mkdir": True},
    }  # no "runs" index: copick would then make index-only runs that cannot list their data
    cfg_path = out / "copick_config.json"
    cfg_path.write_text(json.dumps(config, indent=2))
    return {"config": cfg_path, "runs": len(ids), "picks": len(counts), "points": sum(counts)}
