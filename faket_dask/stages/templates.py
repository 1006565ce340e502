"""Particle templates: built-in shapes, MRC density maps and PDB/mmCIF atomic models.

A :class:`Template` is a density map on the sample's pixel spacing, with its reference point
(the particle's position) at the centre voxel ``n // 2`` of every axis (the RELION
convention), zero outside its contour. Sources:

* ``builtin:<shape>[:<scale>]``: analytic shapes defined in Å, so they keep their physical
  size at any pixel spacing: ``ribosome`` (two unequal lobes, ~300 Å), ``proteasome`` (a
  hollow barrel, 150 x 120 Å), ``ring`` (a torus, 165 Å across), ``rod`` (a capsule,
  245 x 44 Å), ``lshape`` (a chiral three-armed corner with arms of 140, 90 and 50 Å) and
  ``sphere`` (radius 40 Å). ``scale`` multiplies every length. Edges are anti-aliased
  (a one-voxel linear ramp of the signed distance).
* ``*.mrc`` / ``*.map``: a density map with its pixel spacing (header, or given), resampled
  to the sample's spacing with linear interpolation about the box centre ``n // 2``
  (anti-aliased by a Gaussian of σ = (f - 1) / 2 source voxels when shrinking by f).
  Negative values are clipped to zero.
* ``*.pdb`` / ``*.ent`` / ``*.cif`` / ``*.mmcif``: an atomic model (first model; altloc
  blank or A; waters skipped), rendered as a sum of isotropic Gaussians, one per atom,
  weighted by its atomic number Z, with σ = max(1 Å, 0.7 x pixel spacing). This is the
  documented approximation of the electrostatic potential: Z-weighting stands in for the
  atomic scattering factors and the width for resolution and B-factors. The reference point
  is the Z-weighted centroid of the atoms.

Every template is then cut at ``threshold x max`` (voxels below it are neither density nor
label), scaled so its mean density inside the contour is ``density`` (1 for protein), and
cropped to the smallest box that is symmetric about the centre.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from faket_dask.errors import InputError

__all__ = [
    "BUILTIN_SHAPES",
    "RotatedBox",
    "Template",
    "atomic_number",
    "atoms_to_density",
    "builtin_template",
    "load_template",
    "make_template",
    "read_atoms",
    "read_mmcif",
    "read_pdb",
    "resample_map",
    "rotate_template",
]

MAP_SUFFIXES = (".mrc", ".map")
PDB_SUFFIXES = (".pdb", ".ent")
CIF_SUFFIXES = (".cif", ".mmcif")
WATER_NAMES = frozenset({"HOH", "WAT", "DOD", "H2O", "SOL", "TIP3", "TIP"})


@dataclass(frozen=True, eq=False)
class Template:
    """A particle's density on the sample grid; the reference point is voxel ``n // 2``.

    Attributes
    ----------
    name
        Class name or source description.
    density
        ``(d, h, w)`` float32 array (odd sizes), zero outside the contour.
    pixel_spacing
        Å per voxel (the sample's).
    level
        Absolute contour: after a rotation, voxels above it belong to the particle.
    source
        Where it came from (``builtin:ribosome``, a path).
    """

    name: str
    density: np.ndarray
    pixel_spacing: float
    level: float
    source: str
    _radius: float = field(default=0.0, repr=False)

    @property
    def centre(self) -> np.ndarray:
        """Index of the reference point (``n // 2`` per axis)."""
        return np.array([n // 2 for n in self.density.shape], dtype=np.float64)

    @property
    def radius_px(self) -> float:
        """Largest distance (voxels) from the centre to a voxel inside the contour."""
        return self._radius

    @functools.cached_property
    def surface(self) -> np.ndarray:
        """(N, 3) float64 (z, y, x) offsets from the centre of the contour's boundary voxels."""
        inside = self.density > self.level
        core = ndimage.binary_erosion(inside)
        return (np.argwhere(inside & ~core) - self.centre).astype(np.float64)

    @property
    def volume_voxels(self) -> int:
        """Number of voxels inside the contour (unrotated)."""
        return int(np.count_nonzero(self.density > self.level))


@dataclass(frozen=True, eq=False)
class RotatedBox:
    """A rotated template, cropped to its contour.

    ``offset`` is the box's first voxel relative to the particle's position, in (z, y, x)
    order: the box covers ``position + offset + [0, shape)``.
    """

    offset: np.ndarray
    density: np.ndarray
    mask: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """Box shape (z, y, x)."""
        return tuple(int(s) for s in self.mask.shape)  # type: ignore[return-value]


# --------------------------------------------------------------------------- finishing


def make_template(
    data: np.ndarray,
    pixel_spacing: float,
    *,
    name: str,
    source: str,
    threshold: float = 0.05,
    density: float = 1.0,
) -> Template:
    """Cut a centred map at ``threshold x max``, scale it to ``density`` and crop it.

    ``data`` must have odd sizes with its reference point at ``n // 2``.
    """
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim != 3 or any(n % 2 == 0 for n in arr.shape):
        raise ValueError(f"template arrays must be 3-D with odd sizes, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{source}: the template contains NaN or Inf values")
    arr = np.clip(arr, 0.0, None)
    peak = float(arr.max())
    if peak <= 0:
        raise InputError(f"{source}: the template has no positive density")
    inside = arr > threshold * peak
    gain = density / float(arr[inside].mean())
    arr = np.where(inside, arr * gain, 0.0)
    level = threshold * peak * gain
    # one voxel of zeros around, then crop symmetrically about the centre to the contour
    arr = np.pad(arr, 1)
    inside = np.pad(inside, 1)
    centre = np.array([n // 2 for n in arr.shape])
    idx = np.argwhere(inside)
    half = np.max(np.abs(idx - centre), axis=0) + 1
    arr = arr[tuple(slice(int(c - h), int(c + h + 1)) for c, h in zip(centre, half, strict=True))]
    radius = float(np.sqrt(((idx - centre) ** 2).sum(axis=1)).max())
    return Template(
        name=name,
        density=np.ascontiguousarray(arr, dtype=np.float32),
        pixel_spacing=float(pixel_spacing),
        level=float(level),
        source=source,
        _radius=radius,
    )


# --------------------------------------------------------------------------- rotation


def rotate_template(template: Template, matrix: np.ndarray) -> RotatedBox:
    """Rotate a template by ``matrix`` (3x3, acting on (x, y, z) column vectors).

    Linear interpolation (``scipy.ndimage.affine_transform``, order 1) about the reference
    point, evaluated only in the bounding box of the rotated contour (plus two voxels); the
    result is cut at the template's contour and cropped to it. Deterministic: the same
    inputs give the same bytes.
    """
    r = np.asarray(matrix, dtype=np.float64)
    perm = np.eye(3)[::-1]  # (x, y, z) <-> (z, y, x)
    m = perm @ r.T @ perm  # output (z, y, x) offset -> template (z, y, x) offset
    moved = template.surface @ m  # = (m.T @ p) per row: where the contour's voxels go
    lo = np.floor(moved.min(axis=0)).astype(np.int64) - 2
    hi = np.ceil(moved.max(axis=0)).astype(np.int64) + 2
    out = ndimage.affine_transform(
        template.density,
        m,
        offset=template.centre + m @ lo,
        output_shape=tuple(int(v) for v in hi - lo + 1),
        output=np.float32,
        order=1,
        mode="constant",
        cval=0.0,
        prefilter=False,
    )
    mask = out > template.level
    if not mask.any():  # a degenerate, sub-voxel template: one voxel at the position
        one = np.full((1, 1, 1), np.float32(template.level), dtype=np.float32)
        return RotatedBox(offset=np.zeros(3, np.int64), density=one, mask=np.ones_like(one, bool))
    nz = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    first = np.array([v[0] for v in nz])
    last = np.array([v[-1] + 1 for v in nz])
    sl = tuple(slice(int(a), int(b)) for a, b in zip(first, last, strict=True))
    mask = np.ascontiguousarray(mask[sl])
    dens = np.ascontiguousarray(np.where(mask, out[sl], np.float32(0)))
    return RotatedBox(offset=(lo + first).astype(np.int64), density=dens, mask=mask)


# --------------------------------------------------------------------------- built-ins


def _capsule(p: np.ndarray, a: tuple[float, ...], b: tuple[float, ...], r: float) -> np.ndarray:
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    ab = b_ - a_
    pa = p - a_[:, None, None, None]
    t = np.clip(np.tensordot(ab, pa, axes=1) / float(ab @ ab), 0.0, 1.0)
    d = pa - ab[:, None, None, None] * t
    return np.sqrt((d**2).sum(axis=0)) - r


def _ellipsoid(p: np.ndarray, c: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    q = (p - np.asarray(c, float)[:, None, None, None]) / np.asarray(radii, float)[
        :, None, None, None
    ]
    return (np.sqrt((q**2).sum(axis=0)) - 1.0) * min(radii)


def _sdf_sphere(p: np.ndarray) -> np.ndarray:
    return np.sqrt((p**2).sum(axis=0)) - 40.0


def _sdf_ribosome(p: np.ndarray) -> np.ndarray:
    large = _ellipsoid(p, (-5.0, 0.0, -25.0), (120.0, 110.0, 105.0))
    small = _ellipsoid(p, (20.0, 0.0, 95.0), (95.0, 70.0, 60.0))
    return np.minimum(large, small)


def _sdf_proteasome(p: np.ndarray) -> np.ndarray:
    x, y, z = p
    r = np.sqrt(x**2 + y**2)
    radial = np.maximum(r - 60.0, 25.0 - r)
    return np.maximum(radial, np.abs(z) - 75.0)


def _sdf_ring(p: np.ndarray) -> np.ndarray:
    x, y, z = p
    return np.sqrt((np.sqrt(x**2 + y**2) - 60.0) ** 2 + z**2) - 22.0


def _sdf_rod(p: np.ndarray) -> np.ndarray:
    return _capsule(p, (0.0, 0.0, -100.0), (0.0, 0.0, 100.0), 22.0)


def _sdf_lshape(p: np.ndarray) -> np.ndarray:
    o = (-35.0, -8.0, -20.0)  # corner, placed so that the centroid is near the origin
    ax = _capsule(p, o, (o[0] + 140.0, o[1], o[2]), 22.0)
    az = _capsule(p, o, (o[0], o[1], o[2] + 90.0), 22.0)
    ay = _capsule(p, o, (o[0], o[1] + 50.0, o[2]), 22.0)
    return np.minimum(np.minimum(ax, az), ay)


#: name -> (signed distance in Å of a point (3, ...) in Å, bounding radius in Å)
BUILTIN_SHAPES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "ribosome": (_sdf_ribosome, 190.0),
    "proteasome": (_sdf_proteasome, 100.0),
    "ring": (_sdf_ring, 90.0),
    "rod": (_sdf_rod, 130.0),
    "lshape": (_sdf_lshape, 130.0),
    "sphere": (_sdf_sphere, 45.0),
}


def builtin_template(
    shape: str,
    pixel_spacing: float,
    *,
    scale: float = 1.0,
    name: str | None = None,
    threshold: float = 0.05,
    density: float = 1.0,
) -> Template:
    """A built-in shape at ``pixel_spacing`` Å per voxel (lengths multiplied by ``scale``)."""
    if shape not in BUILTIN_SHAPES:
        known = ", ".join(BUILTIN_SHAPES)
        raise InputError(f"built-in template {shape!r} is not known; use one of: {known}")
    if not scale > 0:
        raise InputError(f"built-in template {shape!r}: the scale must be positive")
    sdf, bound = BUILTIN_SHAPES[shape]
    ps = float(pixel_spacing)
    h = math.ceil(bound * scale / ps) + 2
    ax = (np.arange(2 * h + 1) - h) * ps
    z, y, x = np.meshgrid(ax, ax, ax, indexing="ij")
    pts = np.stack([x, y, z]) / scale
    dist = sdf(pts) * scale  # Å
    data = np.clip(0.5 - dist / ps, 0.0, 1.0)
    return make_template(
        data,
        ps,
        name=name or shape,
        source=f"builtin:{shape}" + (f":{scale:g}" if scale != 1.0 else ""),
        threshold=threshold,
        density=density,
    )


# --------------------------------------------------------------------------- maps


def resample_map(data: np.ndarray, src_spacing: float, dst_spacing: float) -> np.ndarray:
    """Resample a map about its centre voxel ``n // 2`` from one pixel spacing to another.

    Returns an array of odd sizes whose centre voxel ``m // 2`` is the same physical point.
    Linear interpolation; a Gaussian anti-alias filter first when shrinking.
    """
    arr = np.asarray(data, dtype=np.float64)
    step = float(dst_spacing) / float(src_spacing)  # source voxels per output voxel
    if step > 1.0:
        arr = ndimage.gaussian_filter(arr, sigma=(step - 1.0) / 2.0, mode="constant")
    centre_in = np.array([n // 2 for n in arr.shape], dtype=np.float64)
    extent = np.maximum(centre_in, np.array(arr.shape) - 1 - centre_in)  # source voxels
    half = np.ceil(extent / step).astype(int) + 1
    out_shape = tuple(int(2 * h + 1) for h in half)
    offset = centre_in - half * step
    return ndimage.affine_transform(
        arr,
        np.full(3, step),
        offset=offset,
        output_shape=out_shape,
        order=1,
        mode="constant",
        cval=0.0,
        prefilter=False,
    )


def _map_template(
    path: Path,
    pixel_spacing: float,
    src_spacing: float | None,
    *,
    name: str,
    threshold: float,
    density: float,
) -> Template:
    from faket_dask.io.mrc import read_mrc

    data, header = read_mrc(path)
    if data.ndim != 3:
        raise InputError(f"{path}: a template map must be 3-D, got shape {data.shape}")
    spacing = src_spacing if src_spacing is not None else header
    if spacing is None:
        raise InputError(
            f"{path}: the MRC header has no voxel size; give the class a pixel_spacing (Å)"
        )
    arr = np.asarray(data, dtype=np.float64)
    if abs(spacing - pixel_spacing) > 1e-6 * pixel_spacing:
        arr = resample_map(arr, spacing, pixel_spacing)
    else:  # same spacing: only make the sizes odd about the centre voxel n // 2
        pad = [(0, 1 if n % 2 == 0 else 0) for n in arr.shape]
        arr = np.pad(arr, pad)
    return make_template(
        arr, pixel_spacing, name=name, source=str(path), threshold=threshold, density=density
    )


# --------------------------------------------------------------------------- atoms

_ELEMENTS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge "
    "As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm "
    "Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U"
).split()
_Z = {sym.upper(): i + 1 for i, sym in enumerate(_ELEMENTS)} | {"D": 1}


def atomic_number(symbol: str) -> int | None:
    """Atomic number of an element symbol (case-insensitive), or None if unknown."""
    return _Z.get(symbol.strip().upper())


def _element_from_name(atom_name: str) -> str:
    # PDB: the element is right-justified in columns 13-14 of the atom name field
    two = atom_name[:2].strip().lstrip("0123456789")
    return two if two.upper() in _Z else two[:1]


def read_pdb(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """ATOM/HETATM records of a PDB file's first model: ((N, 3) x, y, z in Å, (N,) Z)."""
    coords: list[tuple[float, float, float]] = []
    symbols: list[str] = []
    text = Path(path).read_text(errors="replace")
    for line in text.splitlines():
        rec = line[:6]
        if rec.startswith("ENDMDL"):
            break
        if rec not in ("ATOM  ", "HETATM"):
            continue
        line = line.ljust(80)
        if line[16] not in (" ", "A") or line[17:20].strip().upper() in WATER_NAMES:
            continue
        try:
            xyz = (float(line[30:38]), float(line[38:46]), float(line[46:54]))
        except ValueError:
            raise InputError(f"{path}: bad coordinates in line {line.rstrip()!r}") from None
        element = line[76:78].strip() or _element_from_name(line[12:16])
        coords.append(xyz)
        symbols.append(element)
    return _finish_atoms(path, coords, symbols)


_CIF_TOKEN = re.compile(r"""'(?:[^']|'(?=\S))*'(?=\s|$)|"(?:[^"]|"(?=\S))*"(?=\s|$)|\S+""")


def _cif_tokens(line: str) -> list[str]:
    out = []
    for tok in _CIF_TOKEN.findall(line):
        if len(tok) >= 2 and tok[0] in "'\"" and tok[-1] == tok[0]:
            tok = tok[1:-1]
        out.append(tok)
    return out


def read_mmcif(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The ``_atom_site`` loop of an mmCIF file's first model: ((N, 3) Å, (N,) Z)."""
    lines = Path(path).read_text(errors="replace").splitlines()
    i, n = 0, len(lines)
    while i < n:
        if (
            lines[i].strip() == "loop_"
            and i + 1 < n
            and lines[i + 1].lstrip().startswith("_atom_site.")
        ):
            break
        i += 1
    else:
        raise InputError(f"{path}: no _atom_site loop found; is this an mmCIF model?")
    i += 1
    names: list[str] = []
    while i < n and lines[i].lstrip().startswith("_atom_site."):
        names.append(lines[i].split()[0][len("_atom_site.") :])
        i += 1
    col = {k: j for j, k in enumerate(names)}
    needed = ("Cartn_x", "Cartn_y", "Cartn_z")
    if any(k not in col for k in needed):
        raise InputError(f"{path}: the _atom_site loop lacks Cartn_x/y/z")
    tokens: list[str] = []
    while i < n:
        s = lines[i].strip()
        if s.startswith(("_", "loop_", "data_", "#")) or s == "":
            if s.startswith(("_", "loop_", "data_")):
                break
            i += 1
            continue
        tokens.extend(_cif_tokens(lines[i]))
        i += 1
    k = len(names)
    if len(tokens) % k:
        raise InputError(f"{path}: the _atom_site loop has a ragged row")
    rows = [tokens[j : j + k] for j in range(0, len(tokens), k)]
    coords: list[tuple[float, float, float]] = []
    symbols: list[str] = []
    first_model: str | None = None
    for row in rows:
        if "pdbx_PDB_model_num" in col:
            model = row[col["pdbx_PDB_model_num"]]
            first_model = first_model or model
            if model != first_model:
                continue
        alt = row[col["label_alt_id"]] if "label_alt_id" in col else "."
        if alt not in (".", "?", "A"):
            continue
        comp_key = "label_comp_id" if "label_comp_id" in col else "auth_comp_id"
        if comp_key in col and row[col[comp_key]].upper() in WATER_NAMES:
            continue
        try:
            xyz = tuple(float(row[col[c]]) for c in needed)
        except ValueError:
            raise InputError(f"{path}: bad coordinates in _atom_site row {row}") from None
        if "type_symbol" in col:
            element = row[col["type_symbol"]]
        else:
            key = "label_atom_id" if "label_atom_id" in col else "auth_atom_id"
            element = row[col[key]][:1] if key in col else "C"
        coords.append(xyz)  # type: ignore[arg-type]
        symbols.append(element)
    return _finish_atoms(path, coords, symbols)


def _finish_atoms(
    path: str | Path, coords: list[tuple[float, float, float]], symbols: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    if not coords:
        raise InputError(f"{path}: no atoms found (ATOM/HETATM records or _atom_site loop)")
    znum = np.array([atomic_number(s) or 0 for s in symbols], dtype=np.float64)
    unknown = sorted({s for s, z in zip(symbols, znum, strict=True) if z == 0})
    if unknown:
        warnings.warn(
            f"{path}: unknown element(s) {', '.join(unknown)} rendered as carbon", stacklevel=2
        )
        znum[znum == 0] = 6
    return np.asarray(coords, dtype=np.float64), znum


def read_atoms(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Atoms of a PDB (.pdb/.ent) or mmCIF (.cif/.mmcif) file: ((N, 3) x, y, z Å, (N,) Z)."""
    suffix = Path(path).suffix.lower()
    if suffix in PDB_SUFFIXES:
        return read_pdb(path)
    if suffix in CIF_SUFFIXES:
        return read_mmcif(path)
    raise InputError(f"{path}: not an atomic model; use .pdb, .ent, .cif or .mmcif")


def atoms_to_density(
    coords: np.ndarray, znum: np.ndarray, pixel_spacing: float, sigma: float | None = None
) -> np.ndarray:
    """Sum of Z-weighted isotropic Gaussians sampled at voxel centres.

    The grid's centre voxel ``n // 2`` is the Z-weighted centroid of the atoms; sizes are
    odd. ``sigma`` (Å) defaults to ``max(1, 0.7 * pixel_spacing)``.
    """
    ps = float(pixel_spacing)
    sig = float(sigma) if sigma is not None else max(1.0, 0.7 * ps)
    xyz = np.asarray(coords, dtype=np.float64)
    w = np.asarray(znum, dtype=np.float64)
    centroid = (xyz * w[:, None]).sum(axis=0) / w.sum()
    rel = (xyz - centroid)[:, ::-1] / ps  # (z, y, x) in voxels
    k = math.ceil(3.0 * sig / ps)
    half = np.ceil(np.abs(rel).max(axis=0)).astype(int) + k + 1
    shape = tuple(int(2 * h + 1) for h in half)
    pos = rel + half  # fractional voxel index
    base = np.rint(pos).astype(np.int64)
    offs = np.arange(-k, k + 1)
    # separable 1-D Gaussian weights per atom and axis: (N, 2k+1)
    g = [
        np.exp(-0.5 * ((base[:, a, None] + offs[None, :] - pos[:, a, None]) * ps / sig) ** 2)
        for a in range(3)
    ]
    out = np.zeros(int(np.prod(shape)), dtype=np.float64)
    sy, sx = shape[1] * shape[2], shape[2]
    for i, dz in enumerate(offs):
        wz = w * g[0][:, i]
        iz = (base[:, 0] + dz) * sy
        for j, dy in enumerate(offs):
            wzy = wz * g[1][:, j]
            izy = iz + (base[:, 1] + dy) * sx
            for m, dx in enumerate(offs):
                out += np.bincount(
                    izy + base[:, 2] + dx, weights=wzy * g[2][:, m], minlength=out.size
                )
    return out.reshape(shape)


def _atom_template(
    path: Path, pixel_spacing: float, *, name: str, threshold: float, density: float
) -> Template:
    coords, znum = read_atoms(path)
    data = atoms_to_density(coords, znum, pixel_spacing)
    return make_template(
        data, pixel_spacing, name=name, source=str(path), threshold=threshold, density=density
    )


# --------------------------------------------------------------------------- entry point


def load_template(
    spec: str,
    pixel_spacing: float,
    *,
    name: str | None = None,
    threshold: float = 0.05,
    density: float = 1.0,
    source_pixel_spacing: float | None = None,
) -> Template:
    """Build a template from ``builtin:<shape>[:<scale>]``, an MRC map or an atomic model.

    Results are cached per process (keyed by the arguments and the file's size and mtime).

    Raises
    ------
    InputError
        An unknown shape, a missing or unreadable file, an unknown extension.
    """
    key: tuple = (spec, float(pixel_spacing), name, threshold, density, source_pixel_spacing)
    if not spec.startswith("builtin:"):
        p = Path(spec)
        if not p.is_file():
            raise InputError(f"template {spec} does not exist; check the path in the config")
        st = p.stat()
        key = (*key, st.st_size, st.st_mtime_ns)
    return _load_cached(*key)


@functools.lru_cache(maxsize=64)
def _load_cached(
    spec: str,
    pixel_spacing: float,
    name: str | None,
    threshold: float,
    density: float,
    source_pixel_spacing: float | None,
    *_stamp: object,
) -> Template:
    if spec.startswith("builtin:"):
        parts = spec.split(":")
        shape = parts[1] if len(parts) > 1 else ""
        scale = 1.0
        if len(parts) > 2:
            try:
                scale = float(parts[2])
            except ValueError:
                raise InputError(f"template {spec!r}: the scale must be a number") from None
        if len(parts) > 3:
            raise InputError(f"template {spec!r}: use builtin:<shape> or builtin:<shape>:<scale>")
        return builtin_template(
            shape, pixel_spacing, scale=scale, name=name, threshold=threshold, density=density
        )
    path = Path(spec)
    suffix = path.suffix.lower()
    label = name or path.stem
    if suffix in MAP_SUFFIXES:
        return _map_template(
            path,
            pixel_spacing,
            source_pixel_spacing,
            name=label,
            threshold=threshold,
            density=density,
        )
    if suffix in PDB_SUFFIXES + CIF_SUFFIXES:
        return _atom_template(path, pixel_spacing, name=label, threshold=threshold, density=density)
    raise InputError(
        f"template {spec}: unknown kind; use builtin:<shape>, .mrc/.map, .pdb/.ent or .cif"
    )
