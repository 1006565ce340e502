"""Particle tables: orientations, the table itself, and its exports and imports.

Conventions
-----------
* Positions are voxel indices of the sample volume, 0-based, ``(x, y, z)`` with the volume
  stored as ``(Z, Y, X)``; ``x_angst = x * pixel_spacing`` (likewise y, z).
* An orientation is the active rotation ``R`` that turns the template into the particle
  (``particle(R @ p) = template(p)`` about the reference point, acting on (x, y, z)).
* Euler angles follow RELION (ZYZ, ``rot, tilt, psi`` in degrees):
  ``R = Rz(rot) @ Ry(tilt) @ Rz(psi)``, the transpose of RELION's
  ``Euler_angles2matrix(rot, tilt, psi)``, which maps particle to reference coordinates.
  In SciPy: ``Rotation.from_euler("ZYZ", [rot, tilt, psi], degrees=True)``.
* Quaternions are ``(qw, qx, qy, qz)``, scalar first, of the same ``R``, with ``qw >= 0``.
* SHREC-style ``particle_locations.txt`` rows are ``class x y z z1 x z2``: position in
  voxels and the same ``R`` as intrinsic ZXZ Euler angles in degrees
  (``Rotation.from_euler("ZXZ", [z1, x, z2], degrees=True)``).

Table columns (:data:`COLUMNS`): ``id`` (the instance-mask label, from 1), ``class_id`` (the
class-mask label, from 1), ``class_name``, ``kind`` (``particle``, ``membrane`` or
``fiducial``), ``x y z`` (voxels), ``x_angst y_angst z_angst``, ``rot tilt psi``,
``qw qx qy qz``, ``voxels`` (the object's voxel count in the instance mask) and
``radius_angst`` (vesicle, disc or bead radius; 0 for particles).

STAR frames (:func:`to_star`)
-----------------------------
* ``volume``: ``rlnCoordinateX/Y/Z`` are the voxel positions above.
* ``tomogram``: positions on a tomogram binned by ``bin``: ``(x + 0.5) / bin - 0.5`` (the
  centre of the binned voxel that holds the point), and for Z also minus
  ``(Z / bin - tomogram_thickness) / 2`` when the tomogram is a centred Z crop.
* ``relion5``: ``rlnCenteredCoordinateX/Y/ZAngst = (x - X / 2) * pixel_spacing``, i.e.
  relative to the volume's centre (voxel ``X / 2``, the projection's tilt-axis centre for
  even sizes), in Å.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import starfile
from scipy.spatial.transform import Rotation

from faket_dask.errors import InputError

__all__ = [
    "COLUMNS",
    "STAR_ATTR_MAX_ROWS",
    "STAR_FRAMES",
    "ParticleRows",
    "StarGeometry",
    "TableRecord",
    "angle_between",
    "canonical_quaternions",
    "empty_table",
    "matrices_from_table",
    "quaternions_to_matrices",
    "random_quaternions",
    "read_particle_list",
    "relion_euler_from_quaternions",
    "star_blocks",
    "star_coordinates",
    "star_text",
    "table_from_arrays",
    "table_record",
    "to_csv",
    "to_shrec",
    "to_star",
]

STAR_ATTR_MAX_ROWS = 20000  # a stored table keeps its STAR text up to this many rows

COLUMNS = (
    "id",
    "class_id",
    "class_name",
    "kind",
    "x",
    "y",
    "z",
    "x_angst",
    "y_angst",
    "z_angst",
    "rot",
    "tilt",
    "psi",
    "qw",
    "qx",
    "qy",
    "qz",
    "voxels",
    "radius_angst",
)
STAR_FRAMES = ("volume", "tomogram", "relion5")


# --------------------------------------------------------------------------- orientations


def random_quaternions(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` unit quaternions ``(w, x, y, z)`` uniform over SO(3) (Shoemake 1992), ``w >= 0``."""
    u = rng.random((n, 3))
    a, b = np.sqrt(1.0 - u[:, 0]), np.sqrt(u[:, 0])
    t1, t2 = 2.0 * np.pi * u[:, 1], 2.0 * np.pi * u[:, 2]
    q = np.stack([b * np.cos(t2), a * np.sin(t1), a * np.cos(t1), b * np.sin(t2)], axis=1)
    return canonical_quaternions(q)


def canonical_quaternions(q: np.ndarray) -> np.ndarray:
    """Unit quaternions with the sign chosen so that ``w >= 0`` (q and -q are one rotation)."""
    q = np.asarray(q, dtype=np.float64).reshape(-1, 4)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    return np.where(q[:, :1] < 0, -q, q)


def quaternions_to_matrices(q: np.ndarray) -> np.ndarray:
    """``(N, 4)`` scalar-first quaternions -> ``(N, 3, 3)`` rotation matrices on (x, y, z)."""
    q = np.asarray(q, dtype=np.float64).reshape(-1, 4)
    matrices: np.ndarray = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()
    return matrices


def relion_euler_from_quaternions(q: np.ndarray) -> np.ndarray:
    """``(N, 3)`` RELION ``rot, tilt, psi`` (degrees) of the rotations ``q``."""
    q = np.asarray(q, dtype=np.float64).reshape(-1, 4)
    if len(q) == 0:
        return np.zeros((0, 3))
    with warnings.catch_warnings():  # gimbal lock at tilt 0 or 180: SciPy picks psi = 0
        warnings.simplefilter("ignore", UserWarning)
        euler: np.ndarray = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_euler("ZYZ", degrees=True)
    return euler


def _quaternions_from_relion(rot: np.ndarray, tilt: np.ndarray, psi: np.ndarray) -> np.ndarray:
    r = Rotation.from_euler("ZYZ", np.stack([rot, tilt, psi], axis=1), degrees=True)
    return canonical_quaternions(r.as_quat()[:, [3, 0, 1, 2]])


def matrices_from_table(table: pd.DataFrame) -> np.ndarray:
    """``(N, 3, 3)`` rotation matrices of a particle table (from its quaternions)."""
    return quaternions_to_matrices(table[["qw", "qx", "qy", "qz"]].to_numpy())


# --------------------------------------------------------------------------- the table


def empty_table() -> pd.DataFrame:
    """A particle table with no rows and the standard columns."""
    return table_from_arrays(
        ParticleRows(
            ids=np.zeros(0, int),
            class_ids=np.zeros(0, int),
            class_names=[],
            kinds=[],
            positions_xyz=np.zeros((0, 3)),
            quaternions=np.zeros((0, 4)),
            pixel_spacing=1.0,
        )
    )


@dataclass(frozen=True)
class ParticleRows:
    """The per-particle arrays a particle table is assembled from (``N`` rows).

    Attributes
    ----------
    ids, class_ids : ndarray, shape (N,)
        Particle ids and class ids.
    class_names, kinds : sequence of str, length N
        Class name and kind (``particle``, ``membrane``, ``fiducial``) of each row.
    positions_xyz : ndarray, shape (N, 3)
        Centres in voxels, ``x, y, z`` order.
    quaternions : ndarray, shape (N, 4)
        Orientations ``(w, x, y, z)`` (canonicalised by the table).
    pixel_spacing : float
        Angstrom per voxel (for the ``*_angst`` columns).
    voxels, radii_angst : ndarray, shape (N,), optional
        Occupied voxels and radius in angstrom of each row (zeros when absent).
    """

    ids: np.ndarray
    class_ids: np.ndarray
    class_names: Sequence[str]
    kinds: Sequence[str]
    positions_xyz: np.ndarray
    quaternions: np.ndarray
    pixel_spacing: float
    voxels: np.ndarray | None = None
    radii_angst: np.ndarray | None = None


def table_from_arrays(rows: ParticleRows) -> pd.DataFrame:
    """Assemble a particle table (see the module docstring for the columns)."""
    n = len(rows.ids)
    voxels, radii = rows.voxels, rows.radii_angst
    pos = np.asarray(rows.positions_xyz, dtype=np.float64).reshape(n, 3)
    q = canonical_quaternions(rows.quaternions) if n else np.zeros((0, 4))
    eul = relion_euler_from_quaternions(q)
    df = pd.DataFrame(
        {
            "id": np.asarray(rows.ids, dtype=np.int64),
            "class_id": np.asarray(rows.class_ids, dtype=np.int64),
            "class_name": pd.Series(list(rows.class_names), dtype=object),
            "kind": pd.Series(list(rows.kinds), dtype=object),
            "x": pos[:, 0],
            "y": pos[:, 1],
            "z": pos[:, 2],
            "x_angst": pos[:, 0] * rows.pixel_spacing,
            "y_angst": pos[:, 1] * rows.pixel_spacing,
            "z_angst": pos[:, 2] * rows.pixel_spacing,
            "rot": eul[:, 0],
            "tilt": eul[:, 1],
            "psi": eul[:, 2],
            "qw": q[:, 0],
            "qx": q[:, 1],
            "qy": q[:, 2],
            "qz": q[:, 3],
            "voxels": np.zeros(n, np.int64) if voxels is None else np.asarray(voxels, np.int64),
            "radius_angst": np.zeros(n) if radii is None else np.asarray(radii, float),
        }
    )
    return df[list(COLUMNS)]


# --------------------------------------------------------------------------- exports


def _select(table: pd.DataFrame, kinds: Sequence[str] | None) -> pd.DataFrame:
    if kinds is None:
        return table
    return table[table["kind"].isin(list(kinds))]


def star_coordinates(
    table: pd.DataFrame,
    frame: str,
    *,
    shape: tuple[int, int, int],
    pixel_spacing: float,
    bin: int = 1,
    tomogram_thickness: int | None = None,
) -> dict[str, np.ndarray]:
    """The STAR coordinate columns of ``table`` in ``frame`` (see the module docstring)."""
    if frame not in STAR_FRAMES:
        raise InputError(f"STAR frame {frame!r} is not known; use one of {', '.join(STAR_FRAMES)}")
    x, y, z = (table[c].to_numpy(dtype=np.float64) for c in ("x", "y", "z"))
    nz, ny, nx = (int(s) for s in shape)
    if frame == "volume":
        return {"rlnCoordinateX": x, "rlnCoordinateY": y, "rlnCoordinateZ": z}
    if frame == "tomogram":
        if bin < 1:
            raise InputError(f"tomogram bin must be at least 1, got {bin}")
        zoff = 0.0 if tomogram_thickness is None else (nz / bin - tomogram_thickness) / 2.0
        return {
            "rlnCoordinateX": (x + 0.5) / bin - 0.5,
            "rlnCoordinateY": (y + 0.5) / bin - 0.5,
            "rlnCoordinateZ": (z + 0.5) / bin - 0.5 - zoff,
        }
    ps = float(pixel_spacing)
    return {
        "rlnCenteredCoordinateXAngst": (x - nx / 2.0) * ps,
        "rlnCenteredCoordinateYAngst": (y - ny / 2.0) * ps,
        "rlnCenteredCoordinateZAngst": (z - nz / 2.0) * ps,
    }


@dataclass(frozen=True)
class StarGeometry:
    """Where a STAR file's particles sit: the volume of the table and the frame written.

    Attributes
    ----------
    shape
        `(Z, Y, X)` of the volume the table's coordinates refer to, in voxels.
    pixel_spacing
        Å per voxel of that volume.
    frame
        One of :data:`STAR_FRAMES` (see :func:`star_coordinates`).
    bin, tomogram_thickness
        The tomogram's binning and Z size (binned voxels), for the ``tomogram`` frame.
    tomo_name
        ``rlnTomoName`` of every row.
    """

    shape: tuple[int, int, int]
    pixel_spacing: float
    frame: str = "volume"
    bin: int = 1
    tomogram_thickness: int | None = None
    tomo_name: str = "sample_000000"


def star_blocks(
    table: pd.DataFrame, geometry: StarGeometry, kinds: Sequence[str] | None = ("particle",)
) -> dict[str, pd.DataFrame]:
    """The ``optics`` and ``particles`` blocks of a RELION STAR file."""
    g = geometry
    sel = _select(table, kinds)
    coords = star_coordinates(
        sel,
        g.frame,
        shape=g.shape,
        pixel_spacing=g.pixel_spacing,
        bin=g.bin,
        tomogram_thickness=g.tomogram_thickness,
    )
    image_ps = float(g.pixel_spacing) * (g.bin if g.frame == "tomogram" else 1)
    optics = pd.DataFrame(
        {
            "rlnOpticsGroup": [1],
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnTomoTiltSeriesPixelSize": [float(g.pixel_spacing)],
            "rlnImagePixelSize": [image_ps],
        }
    )
    particles = pd.DataFrame(
        {
            "rlnTomoName": [g.tomo_name] * len(sel),
            "rlnTomoParticleName": [f"{g.tomo_name}/{int(i)}" for i in sel["id"]],
            **coords,
            "rlnAngleRot": sel["rot"].to_numpy(),
            "rlnAngleTilt": sel["tilt"].to_numpy(),
            "rlnAnglePsi": sel["psi"].to_numpy(),
            "rlnClassNumber": sel["class_id"].to_numpy(dtype=np.int64),
            "rlnOpticsGroup": np.ones(len(sel), dtype=np.int64),
        }
    )
    return {"optics": optics, "particles": particles}


def star_text(
    table: pd.DataFrame, geometry: StarGeometry, kinds: Sequence[str] | None = ("particle",)
) -> str:
    """The RELION STAR text (``optics`` + ``particles`` blocks of :func:`star_blocks`).

    The one STAR writer: :func:`to_star` writes this text to a file and :func:`table_record`
    keeps it beside the stored table. starfile's first line (``# Created by ... at <time>``)
    is left out, so the text is a function of the table alone.
    """
    text = str(starfile.to_string(star_blocks(table, geometry, kinds), float_format="%.6f"))
    first, _, rest = text.partition("\n")
    return rest if first.startswith("# Created by") else text


def to_star(table: pd.DataFrame, path: str | Path, geometry: StarGeometry) -> Path:
    """Write a RELION STAR file of the table's particles (:func:`star_text`).

    ``rlnClassNumber`` is the table's ``class_id``.
    """
    path = Path(path)
    path.write_text(star_text(table, geometry))
    return path


@dataclass(frozen=True)
class TableRecord:
    """A particle table as it is stored by ``io.writers.write_particles(group, columns, ...)``.

    Attributes
    ----------
    columns
        Column name -> ``(N,)`` values.
    star
        The particles as STAR text (volume frame), or ``None`` for a table too long to keep.
    attrs
        ``pixel_spacing`` (Å), ``shape`` ``[Z, Y, X]`` and ``classes`` ``{id: name}``.
    """

    columns: dict[str, np.ndarray]
    star: str | None
    attrs: dict[str, Any]


def table_record(
    table: pd.DataFrame,
    *,
    shape: tuple[int, int, int],
    pixel_spacing: float,
    classes: Mapping[int, str],
    tomo_name: str,
) -> TableRecord:
    """The one way a sample's particle table is stored: columns, STAR text and geometry attrs.

    The STAR text (particles, volume frame) is kept for tables of at most
    :data:`STAR_ATTR_MAX_ROWS` rows; it is a convenience copy, so a failure to make it is
    recorded in its place rather than raised.
    """
    star: str | None = None
    if len(table) <= STAR_ATTR_MAX_ROWS:
        try:
            star = star_text(table, StarGeometry(shape, pixel_spacing, tomo_name=tomo_name))
        except Exception as err:  # STAR is a convenience copy of the table
            star = f"# STAR export failed: {err}"
    attrs = {
        "pixel_spacing": float(pixel_spacing),
        "shape": [int(s) for s in shape],
        "classes": {str(k): v for k, v in classes.items()},
    }
    return TableRecord({c: table[c].to_numpy() for c in table.columns}, star, attrs)


def to_csv(table: pd.DataFrame, path: str | Path, kinds: Sequence[str] | None = None) -> Path:
    """Write the table as CSV (all columns; all rows unless ``kinds`` is given)."""
    path = Path(path)
    _select(table, kinds).to_csv(path, index=False, float_format="%.10g")
    return path


def to_shrec(table: pd.DataFrame, path: str | Path, kinds: Sequence[str] | None = None) -> Path:
    """Write SHREC-style ``particle_locations.txt``: ``class x y z z1 x z2`` per row.

    Membranes are written with the class name ``vesicle`` (as in SHREC'21) and beads as
    ``fiducial``.
    """
    path = Path(path)
    sel = _select(table, kinds)
    q = sel[["qw", "qx", "qy", "qz"]].to_numpy()
    if len(q):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            zxz = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_euler("ZXZ", degrees=True)
    else:
        zxz = np.zeros((0, 3))
    lines = []
    for (_, row), ang in zip(sel.iterrows(), zxz, strict=True):
        name = "vesicle" if row["kind"] == "membrane" else str(row["class_name"])
        pos = " ".join(_fmt(row[c]) for c in ("x", "y", "z"))
        lines.append(f"{name} {pos} {ang[0]:.4f} {ang[1]:.4f} {ang[2]:.4f}")
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    return path


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.3f}"


# --------------------------------------------------------------------------- imports


def read_particle_list(
    path: str | Path,
    *,
    pixel_spacing: float | None = None,
    shape: tuple[int, int, int] | None = None,
    class_names: dict[int, str] | None = None,
) -> pd.DataFrame:
    """Read a particle list (our CSV, a RELION STAR file, or SHREC particle_locations.txt).

    Returns a table with the standard columns. STAR files in the RELION-5 centred-Å frame
    need ``shape`` and ``pixel_spacing`` to become voxel positions. Ids are numbered from 1
    in file order unless the file has them. ``class_names`` maps class ids to names.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"particle list {path} does not exist; check the path")
    suffix = path.suffix.lower()
    ps = float(pixel_spacing) if pixel_spacing else 1.0
    if suffix == ".csv":
        df = pd.read_csv(path)
        missing = [c for c in ("x", "y", "z") if c not in df.columns]
        if missing:
            raise InputError(f"{path}: the CSV lacks column(s) {', '.join(missing)}")
        return _complete(df, ps, class_names)
    if suffix == ".star":
        return _read_star(path, ps, shape, class_names)
    return _read_shrec(path, ps)


def _complete(df: pd.DataFrame, ps: float, class_names: dict[int, str] | None) -> pd.DataFrame:
    n = len(df)
    if "id" not in df.columns:
        df["id"] = np.arange(1, n + 1)
    if "class_id" not in df.columns:
        names = (
            df["class_name"].astype(str)
            if "class_name" in df.columns
            else pd.Series(["particle"] * n)
        )
        uniq = list(dict.fromkeys(names))
        df["class_id"] = [uniq.index(v) + 1 for v in names]
    if "class_name" not in df.columns:
        cmap = class_names or {}
        df["class_name"] = [cmap.get(int(c), f"class{int(c)}") for c in df["class_id"]]
    if "kind" not in df.columns:
        df["kind"] = [
            "membrane"
            if str(c).lower() in ("vesicle", "membrane")
            else "fiducial"
            if str(c).lower() == "fiducial"
            else "particle"
            for c in df["class_name"]
        ]
    if not {"qw", "qx", "qy", "qz"} <= set(df.columns):
        if {"rot", "tilt", "psi"} <= set(df.columns):
            q = _quaternions_from_relion(*(df[c].to_numpy(float) for c in ("rot", "tilt", "psi")))
        else:
            q = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
        df[["qw", "qx", "qy", "qz"]] = q
    pos = df[["x", "y", "z"]].to_numpy(dtype=np.float64)
    return table_from_arrays(
        ParticleRows(
            ids=df["id"].to_numpy(),
            class_ids=df["class_id"].to_numpy(),
            class_names=df["class_name"].astype(str).tolist(),
            kinds=df["kind"].astype(str).tolist(),
            positions_xyz=pos,
            quaternions=df[["qw", "qx", "qy", "qz"]].to_numpy(dtype=np.float64),
            pixel_spacing=ps,
            voxels=df["voxels"].to_numpy() if "voxels" in df.columns else None,
            radii_angst=df["radius_angst"].to_numpy() if "radius_angst" in df.columns else None,
        )
    )


def _read_star(
    path: Path, ps: float, shape: tuple[int, int, int] | None, class_names: dict[int, str] | None
) -> pd.DataFrame:
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as err:  # starfile raises assorted parser errors
        raise InputError(f"{path}: not a readable STAR file ({err})") from None
    block = blocks.get("particles")
    if block is None:
        block = next((b for b in blocks.values() if isinstance(b, pd.DataFrame)), None)
    if block is None or not isinstance(block, pd.DataFrame):
        raise InputError(f"{path}: no particle table found in the STAR file")
    if {"rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"} <= set(block.columns):
        x, y, z = (block[f"rlnCoordinate{a}"].to_numpy(float) for a in "XYZ")
    elif {"rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst"} <= set(block.columns):
        if shape is None or not ps:
            raise InputError(f"{path}: centred Å coordinates need the volume shape and spacing")
        nz, ny, nx = shape
        x = block["rlnCenteredCoordinateXAngst"].to_numpy(float) / ps + nx / 2.0
        y = block["rlnCenteredCoordinateYAngst"].to_numpy(float) / ps + ny / 2.0
        z = block["rlnCenteredCoordinateZAngst"].to_numpy(float) / ps + nz / 2.0
    else:
        raise InputError(f"{path}: the STAR file has no rlnCoordinateX/Y/Z columns")
    df = pd.DataFrame({"x": x, "y": y, "z": z})
    if "rlnClassNumber" in block.columns:
        df["class_id"] = block["rlnClassNumber"].to_numpy(dtype=np.int64)
    for a, c in (("rot", "rlnAngleRot"), ("tilt", "rlnAngleTilt"), ("psi", "rlnAnglePsi")):
        df[a] = block[c].to_numpy(float) if c in block.columns else 0.0
    return _complete(df, ps, class_names)


def _read_shrec(path: Path, ps: float) -> pd.DataFrame:
    rows = []
    for k, line in enumerate(Path(path).read_text().splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) < 4:
            raise InputError(f"{path}:{k}: expected 'class x y z [z1 x z2]', got {line!r}")
        try:
            vals = [float(v) for v in parts[1:7]]
        except ValueError:
            raise InputError(f"{path}:{k}: non-numeric values in {line!r}") from None
        vals += [0.0] * (6 - len(vals))
        rows.append((parts[0], *vals))
    df = pd.DataFrame(rows, columns=["class_name", "x", "y", "z", "z1", "xr", "z2"])
    if len(df):
        r = Rotation.from_euler("ZXZ", df[["z1", "xr", "z2"]].to_numpy(), degrees=True)
        df[["qw", "qx", "qy", "qz"]] = canonical_quaternions(r.as_quat()[:, [3, 0, 1, 2]])
    else:
        df[["qw", "qx", "qy", "qz"]] = np.zeros((0, 4))
    return _complete(df.drop(columns=["z1", "xr", "z2"]), ps, None)


def angle_between(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Rotation angle (degrees) between quaternions, sign-invariant."""
    d = np.abs(np.sum(np.asarray(q1) * np.asarray(q2), axis=-1)).clip(0, 1)
    angle: np.ndarray = np.degrees(2.0 * np.arccos(d))
    return angle
