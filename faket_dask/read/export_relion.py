"""Export samples as a RELION 5 tomography set: tomograms, tilt-series and particle STAR files.

Layout (every path inside the STAR files is relative to ``DIR``, RELION's project folder)::

    DIR/
      tomograms.star                  data_global: one row per tilt-series
      tilt_series/sample_000000.star  data_sample_000000: one row per tilt
      tilt_series/sample_000000.mrcs  the tilt stack (MRC image stack, space group 0) + .tlt
      tomograms/sample_000000.mrc     the store's tomogram (binned), when the sample has one
      tomograms/sample_000000_class_mask.mrc   its class mask (class ids)
      particles.star                  data_optics + data_particles
      optimisation_set.star           rlnTomoParticlesFile, rlnTomoTomogramsFile

Geometry (RELION 5's conventions)
---------------------------------
A particle at ``rlnCenteredCoordinate{X,Y,Z}Angst`` = ``c`` sits at tilt-series pixel
``p = c / rlnTomoTiltSeriesPixelSize + (rlnTomoSizeX, Y, Z) / 2`` of the tomogram's unbinned
grid (RELION's ``ParticleSet::getPosition``). ``rlnTomoSizeX/Y`` are the sample volume's X/Y,
``rlnTomoSizeZ`` the tomogram's thickness in tilt-series pixels (binned thickness × bin; the
volume's Z without a tomogram), centred on the volume's centre as the tomogram is. Tilt ``t``
projects ``p`` to the image pixel ``s2 · s1 · Rz(ZRot) · Ry(YTilt) · Rx(XTilt) · s0 · p`` with
``s0`` the shift by minus the specimen centre ``int(size / 2)``, ``s1`` the shift by
``(XShiftAngst, YShiftAngst) / pixel size`` and ``s2`` the shift to the image centre
``int(W / 2), int(H / 2)`` (RELION's ``TomoBackprojectProgram::getProjectMatrices``; rotations
are right-handed, angles in degrees). For this project's projector that means:

* ``rlnTomoYTilt = -θ`` with ``θ`` the ``.tlt`` angle (``rlnTomoNominalStageTiltAngle``): the
  projector puts a point at ``dx cos θ - dz sin θ`` (:mod:`faket_dask.stages.projection`);
* ``rlnTomoXTilt = 0``; ``rlnTomoZRot`` = the sample's tilt-axis rotation
  (``tilts.tilt_axis_deg``);
* ``rlnTomoX/YShiftAngst`` hold the sample's per-tilt shifts plus the constant offset between
  the projector's detector centre and RELION's (zero for even sizes without a tilt axis
  rotation), so the formula above reproduces the projector exactly.

The exported tomogram is the store's reconstruction, binned by ``rlnTomoTomogramBinning`` =
``b`` by block means: its voxel ``k`` averages tilt-series pixels ``k b .. k b + b - 1``, so a
particle is in voxel ``floor(p / b)`` (RELION's own ``reconstruct_tomogram`` samples voxel ``k``
at ``k b``: the same grid shifted by ``(b - 1) / 2`` pixels, under half a binned voxel).

Microscope and dose: FakET simulates no CTF, so defocus is 0 and the voltage, spherical
aberration and amplitude contrast are nominal (:class:`RelionOptions`: 300 kV, 2.7 mm, 0.1).
``rlnMicrographPreExposure`` is the dose before each tilt, the tilts taken in the order the
store lists them at ``dose_per_tilt`` (default 3 e⁻/Å²). ``rlnTomoHand`` is +1 (the geometry
above is used as is; with no CTF the hand does not change the data).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import starfile

from faket_dask.angles import write_tilt_file
from faket_dask.errors import InputError
from faket_dask.io.mrc import write_mrc
from faket_dask.io.ome import TILT_PREFERENCE
from faket_dask.read.export_ngff import has_grid, prepare_output, samples_to_export
from faket_dask.stages.particles import StarGeometry, star_blocks
from faket_dask.stages.projection import padded_size

__all__ = [
    "OPTICS_COLUMNS",
    "PARTICLE_COLUMNS",
    "TILT_COLUMNS",
    "TOMOGRAM_COLUMNS",
    "RelionOptions",
    "export_relion5",
    "projection_matrices",
    "tilt_geometry",
]

TOMOGRAM_COLUMNS = (
    "rlnTomoName",
    "rlnVoltage",
    "rlnSphericalAberration",
    "rlnAmplitudeContrast",
    "rlnMicrographOriginalPixelSize",
    "rlnTomoHand",
    "rlnTomoTiltSeriesPixelSize",
    "rlnTomoTiltSeriesStarFile",
    "rlnTomoTomogramBinning",
    "rlnTomoSizeX",
    "rlnTomoSizeY",
    "rlnTomoSizeZ",
    "rlnTomoReconstructedTomogram",  # only when every sample has a tomogram
)
TILT_COLUMNS = (
    "rlnMicrographName",  # the tilt image, "N@tilt_series/NAME.mrcs" (RELION reads it)
    "rlnTomoNominalStageTiltAngle",
    "rlnMicrographPreExposure",
    "rlnDefocusU",
    "rlnDefocusV",
    "rlnDefocusAngle",
    "rlnTomoXTilt",
    "rlnTomoYTilt",
    "rlnTomoZRot",
    "rlnTomoXShiftAngst",
    "rlnTomoYShiftAngst",
)
OPTICS_COLUMNS = (
    "rlnOpticsGroup",
    "rlnOpticsGroupName",
    "rlnVoltage",
    "rlnSphericalAberration",
    "rlnAmplitudeContrast",
    "rlnTomoTiltSeriesPixelSize",
)
PARTICLE_COLUMNS = (
    "rlnTomoName",
    "rlnTomoParticleName",
    "rlnCenteredCoordinateXAngst",
    "rlnCenteredCoordinateYAngst",
    "rlnCenteredCoordinateZAngst",
    "rlnAngleRot",
    "rlnAngleTilt",
    "rlnAnglePsi",
    "rlnClassNumber",
    "rlnOpticsGroup",
)


@dataclass(frozen=True)
class RelionOptions:
    """What the store does not record: the tilt modality and nominal microscope values.

    Attributes
    ----------
    modality
        Tilt modality exported as the tilt-series (default: ``styled``, else ``noisy``...).
    voltage_kv, cs_mm, amplitude_contrast
        Nominal optics (FakET simulates no CTF).
    dose_per_tilt
        e⁻/Å² per tilt; tilts are taken in the order the store lists them.
    """

    modality: str | None = None
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1
    dose_per_tilt: float = 3.0


def _rot(axis: int, deg: float) -> np.ndarray:
    """Right-handed rotation about x (0), y (1) or z (2) by ``deg``, 4x4 homogeneous."""
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m = np.eye(4)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def _shift(v: Sequence[float]) -> np.ndarray:
    m = np.eye(4)
    m[: len(v), 3] = v
    return m


def projection_matrices(
    tilts: Any, pixel_size: float, sizes: Sequence[int], image_wh: Sequence[int]
) -> np.ndarray:
    """``(T, 4, 4)`` RELION 5 projection matrices of a per-tilt STAR table (RELION's formula).

    ``sizes`` is ``rlnTomoSizeX/Y/Z`` and ``image_wh`` the tilt image's width and height. A
    matrix maps tomogram pixel ``(x, y, z, 1)`` to tilt image pixel ``(x, y, ., 1)``.
    """
    s0 = _shift([-float(int(n / 2)) for n in sizes])
    s2 = _shift([float(int(image_wh[0] / 2)), float(int(image_wh[1] / 2))])
    out = []
    for _, row in tilts.iterrows():
        sx, sy = row["rlnTomoXShiftAngst"] / pixel_size, row["rlnTomoYShiftAngst"] / pixel_size
        r = _rot(2, row["rlnTomoZRot"]) @ _rot(1, row["rlnTomoYTilt"])
        out.append(s2 @ _shift([sx, sy]) @ r @ _rot(0, row["rlnTomoXTilt"]) @ s0)
    return np.stack(out)


def tilt_geometry(
    theta: np.ndarray,
    volume_shape: Sequence[int],
    image_hw: Sequence[int],
    size_z: int,
    tilt_axis_deg: float = 0.0,
    shifts_px: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """RELION 5 per-tilt angles and shifts (pixels) that reproduce this project's projector.

    Parameters
    ----------
    theta
        ``(T,)`` tilt angles (deg, the ``.tlt`` convention of the projector).
    volume_shape
        ``(Z, Y, X)`` of the projected volume; ``image_hw`` the tilt images' ``(H, W)``.
    size_z
        ``rlnTomoSizeZ``: the tomogram's thickness in pixels, centred on the volume's centre.
    tilt_axis_deg, shifts_px
        The sample's misalignment: the tilts rotated by ``tilt_axis_deg`` about
        ``((W - 1) / 2, (H - 1) / 2)``, then shifted by ``shifts_px[t]`` = ``(y, x)``.

    Returns
    -------
    ``rlnTomoXTilt``, ``rlnTomoYTilt``, ``rlnTomoZRot`` (deg) and ``shift_x``, ``shift_y``
    (pixels; × pixel size for ``rlnTomoX/YShiftAngst``), each ``(T,)``.
    """
    theta = np.asarray(theta, dtype=np.float64)
    n = theta.size
    nz, ny, nx = (int(v) for v in volume_shape)
    h, w = (int(v) for v in image_hw)
    big_p = padded_size(nz, nx)
    q0 = big_p // 2 - (big_p - w) // 2  # the projector's detector column of x = X // 2, z = Z // 2
    t = np.deg2rad(theta)
    # projector minus RELION before misalignment (pixels): a point at volume (x, y, z) is at
    # tomogram z - Z / 2 + size_z / 2, rotated about int(size_z / 2) by RELION, Z // 2 by us
    dz = nz / 2 - nz // 2 - (size_z / 2 - int(size_z / 2))
    off_x = q0 - int(w / 2) - dz * np.sin(t)
    off_y = np.full(n, float(int(ny / 2) - int(h / 2)))  # rows: y -> y (H == Y)
    sh = np.zeros((n, 2)) if shifts_px is None else np.asarray(shifts_px, dtype=np.float64)
    # then we rotate about c = ((W - 1) / 2, (H - 1) / 2) and shift: fold all into s1
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    ca, sa = np.cos(np.deg2rad(tilt_axis_deg)), np.sin(np.deg2rad(tilt_axis_deg))
    vx, vy = int(w / 2) + off_x - cx, int(h / 2) + off_y - cy
    return {
        "rlnTomoXTilt": np.zeros(n),
        "rlnTomoYTilt": 0.0 - theta,  # (no -0.0)
        "rlnTomoZRot": np.full(n, float(tilt_axis_deg)),
        "shift_x": ca * vx - sa * vy + cx + sh[:, 1] - int(w / 2),
        "shift_y": sa * vx + ca * vy + cy + sh[:, 0] - int(h / 2),
    }


def _tilt_table(ds: Any, sid: int, opts: RelionOptions, geom: dict) -> Any:
    """The per-tilt STAR block of a sample (see the module docstring for the geometry)."""
    tilts = ds.sample(sid, "tilts")
    theta = np.asarray(tilts["tilt_angle"].values, dtype=np.float64)
    n = theta.size
    shifts = None
    if "shift_y_px" in tilts.coords:
        shifts = np.stack([tilts["shift_y_px"].values, tilts["shift_x_px"].values], 1)
    g = tilt_geometry(
        theta,
        geom["volume"],
        geom["image_hw"],
        geom["size_z"],
        float(tilts.attrs.get("tilt_axis_deg") or 0.0),
        shifts,
    )
    name = geom["name"]
    return pd.DataFrame(
        {
            "rlnMicrographName": [f"{i + 1}@tilt_series/{name}.mrcs" for i in range(n)],
            "rlnTomoNominalStageTiltAngle": theta,
            "rlnMicrographPreExposure": np.arange(n) * float(opts.dose_per_tilt),
            "rlnDefocusU": np.zeros(n),
            "rlnDefocusV": np.zeros(n),
            "rlnDefocusAngle": np.zeros(n),
            "rlnTomoXTilt": g["rlnTomoXTilt"],
            "rlnTomoYTilt": g["rlnTomoYTilt"],
            "rlnTomoZRot": g["rlnTomoZRot"],
            "rlnTomoXShiftAngst": g["shift_x"] * geom["ps"],
            "rlnTomoYShiftAngst": g["shift_y"] * geom["ps"],
        }
    )


def _modality(tilts: Any, wanted: str | None) -> str:
    names = [v for v in tilts.data_vars if tilts[v].dims == ("tilt", "y", "x")]
    if wanted is not None:
        if wanted not in names:
            raise InputError(f"--modality {wanted!r}: the samples have {', '.join(names)}")
        return wanted
    for m in TILT_PREFERENCE:
        if m in names:
            return m
    raise InputError(f"no tilt modality to export; the samples have {', '.join(names)}")


def _geometry(ds: Any, sid: int) -> dict[str, Any]:
    meta = Path(ds.path) / "samples" / f"{int(sid):06d}" / "particles" / "zarr.json"
    part = dict(json.loads(meta.read_text()).get("attributes", {}))
    tilts = ds.sample(sid, "tilts")
    geom: dict[str, Any] = {
        "name": f"sample_{int(sid):06d}",
        "volume": tuple(int(s) for s in part["shape"]),
        "ps": float(tilts.attrs["pixel_spacing"]),
        "image_hw": (int(tilts.sizes["y"]), int(tilts.sizes["x"])),
        "bin": 1,
    }
    nz = geom["volume"][0]
    geom["size_z"] = nz
    if has_grid(ds, sid, "tomogram"):
        tomo = ds.sample(sid, "tomogram")
        geom["bin"] = int(tomo.attrs.get("bin", 1))
        geom["size_z"] = int(tomo.attrs.get("thickness", tomo.sizes["z"])) * geom["bin"]
    return geom


def _export_sample(ds: Any, sid: int, out: Path, opts: RelionOptions) -> dict[str, Any]:
    """Write a sample's stack, .tlt, per-tilt STAR and tomogram; return its tomograms.star row."""
    geom = _geometry(ds, sid)
    name = geom["name"]
    tilts = ds.sample(sid, "tilts")
    modality = _modality(tilts, opts.modality)
    stack = np.asarray(tilts[modality].values, dtype=np.float32)
    write_mrc(out / "tilt_series" / f"{name}.mrcs", stack, geom["ps"], stack=True)
    write_tilt_file(out / "tilt_series" / f"{name}.tlt", tilts["tilt_angle"].values)
    table = _tilt_table(ds, sid, opts, geom)
    starfile.write({name: table}, out / "tilt_series" / f"{name}.star", float_format="%.6f")
    _, ny, nx = geom["volume"]
    row: dict[str, Any] = {
        "rlnTomoName": name,
        "rlnVoltage": float(opts.voltage_kv),
        "rlnSphericalAberration": float(opts.cs_mm),
        "rlnAmplitudeContrast": float(opts.amplitude_contrast),
        "rlnMicrographOriginalPixelSize": geom["ps"],
        "rlnTomoHand": 1.0,
        "rlnTomoTiltSeriesPixelSize": geom["ps"],
        "rlnTomoTiltSeriesStarFile": f"tilt_series/{name}.star",
        "rlnTomoTomogramBinning": float(geom["bin"]),
        "rlnTomoSizeX": nx,
        "rlnTomoSizeY": ny,
        "rlnTomoSizeZ": geom["size_z"],
    }
    if has_grid(ds, sid, "tomogram"):
        tomo = ds.sample(sid, "tomogram")
        tps = float(tomo.attrs["pixel_spacing"])
        write_mrc(out / "tomograms" / f"{name}.mrc", tomo["tomogram"].values, tps)
        if "class_mask" in tomo:
            mask = tomo["class_mask"].values
            write_mrc(out / "tomograms" / f"{name}_class_mask.mrc", mask, tps)
        row["rlnTomoReconstructedTomogram"] = f"tomograms/{name}.mrc"
    return row


def _particle_rows(ds: Any, sid: int) -> Any:
    geom = _geometry(ds, sid)
    table = ds.particles(sid)
    where = StarGeometry(geom["volume"], geom["ps"], "relion5", tomo_name=geom["name"])
    blocks = star_blocks(table, where)
    return blocks["particles"][list(PARTICLE_COLUMNS)]


def export_relion5(
    store: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    sample_ids: Sequence[int] | None = None,
    options: RelionOptions | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write complete samples as a RELION 5 tomography set (see the module docstring).

    Returns ``{"tomograms": path, "particles": path, "optimisation_set": path,
    "tilt_series": n, "particles_n": n}``.
    """
    opts = options or RelionOptions()
    ds, ids = samples_to_export(store, sample_ids)
    out = prepare_output(output, overwrite)
    (out / "tilt_series").mkdir()
    if any(has_grid(ds, sid, "tomogram") for sid in ids):
        (out / "tomograms").mkdir()
    rows = [_export_sample(ds, sid, out, opts) for sid in ids]
    global_ = pd.DataFrame(rows)
    global_ = global_[[c for c in TOMOGRAM_COLUMNS if c in global_.columns]].dropna(axis=1)
    starfile.write({"global": global_}, out / "tomograms.star", float_format="%.6f")
    particles = pd.concat([_particle_rows(ds, sid) for sid in ids], ignore_index=True)
    optics = pd.DataFrame(
        {
            "rlnOpticsGroup": [1],
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnVoltage": [float(opts.voltage_kv)],
            "rlnSphericalAberration": [float(opts.cs_mm)],
            "rlnAmplitudeContrast": [float(opts.amplitude_contrast)],
            "rlnTomoTiltSeriesPixelSize": [float(global_["rlnTomoTiltSeriesPixelSize"].iloc[0])],
        }
    )
    starfile.write(
        {"optics": optics, "particles": particles}, out / "particles.star", float_format="%.6f"
    )
    opt = {"rlnTomoParticlesFile": "particles.star", "rlnTomoTomogramsFile": "tomograms.star"}
    starfile.write({"": opt}, out / "optimisation_set.star")
    return {
        "tomograms": out / "tomograms.star",
        "particles": out / "particles.star",
        "optimisation_set": out / "optimisation_set.star",
        "tilt_series": len(ids),
        "particles_n": len(particles),
    }
