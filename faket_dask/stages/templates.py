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
* ``example:<file>``: a file shipped in ``faket_dask/data/``: ``example:peptide.pdb`` is an
  ideal α-helical 14-residue peptide (79 atoms, ~21 Å long) for tests and small demos.
* ``*.mrc`` / ``*.map``: a density map with its pixel spacing (header, or given), resampled
  to the sample's spacing with linear interpolation about the box centre ``n // 2``
  (anti-aliased by a Gaussian of σ = (f - 1) / 2 source voxels when shrinking by f).
  Negative values are clipped to zero.
* ``*.pdb`` / ``*.ent`` / ``*.cif`` / ``*.mmcif`` (each also ``.gz``): an atomic model read
  with gemmi (first model, first alternative conformation, waters dropped), rendered as its
  electrostatic (Coulomb) potential: every atom is the inverse Fourier transform of its
  element's 5-Gaussian electron form factor (gemmi's ``c4322`` table: International Tables
  Vol. C, Table 4.3.2.2, Peng et al. 1996) with its own B-factor added, integrated exactly
  over each voxel of the sample's pixel spacing (:func:`potential_on_grid`). The reference
  point is the atoms' centroid weighted by ``f(0)``.

Every template is then cut at ``threshold x max`` (voxels below it are neither density nor
label), scaled so its mean density inside the contour is ``density`` (1 for protein), and
cropped to the smallest box that is symmetric about the centre.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from faket_dask.errors import InputError
from faket_dask.io.mrc import read_mrc

__all__ = [
    "BUILTIN_SHAPES",
    "POTENTIAL_PER_AMPLITUDE",
    "Atoms",
    "RotatedBox",
    "Template",
    "atoms_to_potential",
    "builtin_template",
    "example_path",
    "is_atomic_model",
    "load_template",
    "make_template",
    "potential_on_grid",
    "read_atoms",
    "resample_map",
    "rotate_template",
    "rotated_box_density",
]

MAP_SUFFIXES = (".mrc", ".map")
ATOM_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")  # each also gzipped


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
        return np.asarray((np.argwhere(inside & ~core) - self.centre).astype(np.float64))

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


def rotated_box_density(
    template: Template, m: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """The rotated density on the box ``lo..hi`` (inclusive), shape ``(hi - lo + 1)``, float32.

    ``m`` maps an output (z, y, x) offset to a template (z, y, x) offset. SciPy's linear
    interpolation about the reference point: the one call every host rotation goes through, so
    the dense and the voxel-list paths give the same bytes.
    """
    out: np.ndarray = ndimage.affine_transform(
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
    return out


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
    out = rotated_box_density(template, m, lo, hi)
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
    return np.asarray(np.sqrt((d**2).sum(axis=0)) - r)


def _ellipsoid(p: np.ndarray, c: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    q = (p - np.asarray(c, float)[:, None, None, None]) / np.asarray(radii, float)[
        :, None, None, None
    ]
    return np.asarray((np.sqrt((q**2).sum(axis=0)) - 1.0) * min(radii))


def _sdf_sphere(p: np.ndarray) -> np.ndarray:
    return np.asarray(np.sqrt((p**2).sum(axis=0)) - 40.0)


def _sdf_ribosome(p: np.ndarray) -> np.ndarray:
    large = _ellipsoid(p, (-5.0, 0.0, -25.0), (120.0, 110.0, 105.0))
    small = _ellipsoid(p, (20.0, 0.0, 95.0), (95.0, 70.0, 60.0))
    return np.asarray(np.minimum(large, small))


def _sdf_proteasome(p: np.ndarray) -> np.ndarray:
    x, y, z = p
    r = np.sqrt(x**2 + y**2)
    radial = np.maximum(r - 60.0, 25.0 - r)
    return np.asarray(np.maximum(radial, np.abs(z) - 75.0))


def _sdf_ring(p: np.ndarray) -> np.ndarray:
    x, y, z = p
    return np.asarray(np.sqrt((np.sqrt(x**2 + y**2) - 60.0) ** 2 + z**2) - 22.0)


def _sdf_rod(p: np.ndarray) -> np.ndarray:
    return _capsule(p, (0.0, 0.0, -100.0), (0.0, 0.0, 100.0), 22.0)


def _sdf_lshape(p: np.ndarray) -> np.ndarray:
    o = (-35.0, -8.0, -20.0)  # corner, placed so that the centroid is near the origin
    ax = _capsule(p, o, (o[0] + 140.0, o[1], o[2]), 22.0)
    az = _capsule(p, o, (o[0], o[1], o[2] + 90.0), 22.0)
    ay = _capsule(p, o, (o[0], o[1] + 50.0, o[2]), 22.0)
    return np.asarray(np.minimum(np.minimum(ax, az), ay))


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
    return np.asarray(
        ndimage.affine_transform(
            arr,
            np.full(3, step),
            offset=offset,
            output_shape=out_shape,
            order=1,
            mode="constant",
            cval=0.0,
            prefilter=False,
        )
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

#: h^2 / (2 pi m0 e) in V·Å²: turns an electron scattering amplitude (Å) into a potential
#: integral (V·Å³); the first Born approximation, ``f(q) = (2 pi m0 e / h^2) ∫ V e^(-2πi q·r)``.
POTENTIAL_PER_AMPLITUDE = 47.878009


@dataclass(frozen=True, eq=False)
class Atoms:
    """An atomic model's atoms with their electron form factors.

    Attributes
    ----------
    xyz
        ``(N, 3)`` positions (x, y, z) in Å.
    a, b
        ``(N, 5)`` five-Gaussian electron form factor of each atom,
        ``f(s) = Σ a_i exp(-b_i s²)`` with ``s = sin θ / λ`` (Å⁻¹): ``a`` in Å and ``b`` in Å²,
        the atom's isotropic B-factor already added to every ``b_i``.
    entry_id
        The model's PDB entry id (``_entry.id`` / the HEADER's id code), or ``None``.
    """

    xyz: np.ndarray
    a: np.ndarray
    b: np.ndarray
    entry_id: str | None = None

    @property
    def f0(self) -> np.ndarray:
        """``(N,)`` forward scattering amplitude ``f(0) = Σ a_i`` of each atom, in Å."""
        return np.asarray(self.a.sum(axis=1))


def is_atomic_model(path: str | Path) -> bool:
    """Whether a path names a PDB or mmCIF file (optionally gzipped) by its extension."""
    name = Path(path).name.lower().removesuffix(".gz")
    return name.endswith(ATOM_SUFFIXES)


def read_atoms(path: str | Path) -> Atoms:
    """The first model of a PDB/mmCIF file (``.gz`` too), read with gemmi.

    Waters are dropped and only the first alternative conformation is kept. Each atom gets
    the electron form factor of its element from gemmi's ``c4322`` table (International
    Tables for Crystallography Vol. C, Table 4.3.2.2: the 5-Gaussian fits of Peng et al.
    1996 for neutral atoms) and its own isotropic B-factor.
    """
    import gemmi  # local: only atomic-model templates need it (and a base env may lack it)

    try:
        st = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{path}: not a readable PDB/mmCIF model ({reason})") from None
    if len(st) == 0:
        raise InputError(f"{path}: no atoms found (no model in the file)")
    st.remove_waters()
    st.remove_alternative_conformations()
    coefs: dict[str, np.ndarray] = {}
    xyz: list[tuple[float, float, float]] = []
    rows: list[np.ndarray] = []
    bfac: list[float] = []
    unknown: set[str] = set()
    for chain in st[0]:
        for res in chain:
            for atom in res:
                el = atom.element
                if el.atomic_number == 0:
                    unknown.add(atom.name)
                    el = gemmi.Element("C")
                if el.name not in coefs:
                    coefs[el.name] = np.asarray(el.c4322.get_coefs(), dtype=np.float64)
                xyz.append((atom.pos.x, atom.pos.y, atom.pos.z))
                rows.append(coefs[el.name])
                bfac.append(float(atom.b_iso))
    if not xyz:
        raise InputError(f"{path}: no atoms found (ATOM/HETATM records or _atom_site loop)")
    if unknown:
        names = ", ".join(sorted(unknown))
        warnings.warn(f"{path}: unknown element in atoms {names}; rendered as carbon", stacklevel=2)
    ab = np.stack(rows)
    entry = str(st.info["_entry.id"]).strip() if "_entry.id" in st.info else ""
    return Atoms(
        xyz=np.asarray(xyz, dtype=np.float64),
        a=ab[:, :5],
        b=ab[:, 5:] + np.asarray(bfac, dtype=np.float64)[:, None],
        entry_id=entry or None,
    )


def _voxel_fractions(
    pos: np.ndarray, base: np.ndarray, offs: np.ndarray, sig: np.ndarray
) -> np.ndarray:
    """``(N, 5, K)`` fraction of each Gaussian's 1-D mass in voxels ``base + offs`` (one axis)."""
    from scipy.special import erf

    edge = (base[:, None] + offs[None, :])[:, None, :] - pos[:, None, None]  # voxel units
    inv = 1.0 / (np.sqrt(2.0) * sig)[:, :, None]
    return np.asarray(0.5 * (erf((edge + 0.5) * inv) - erf((edge - 0.5) * inv)))


def potential_on_grid(
    atoms: Atoms, pixel_spacing: float, shape: tuple[int, int, int], origin: np.ndarray
) -> np.ndarray:
    """The electrostatic potential of ``atoms``, averaged over each voxel of a grid, in V.

    Each atom's potential is the inverse Fourier transform of its form factor,
    ``V(r) = C Σ_i a_i (4π/b_i)^(3/2) exp(-4π² r² / b_i)`` with ``C = h²/(2π m0 e)``
    (:data:`POTENTIAL_PER_AMPLITUDE`), integrated exactly over each voxel (a product of error
    functions per Gaussian) and divided by the voxel volume; each Gaussian is cut 7 σ from
    the atom (relative error below 1e-11).

    Parameters
    ----------
    shape
        ``(d, h, w)`` grid size.
    origin
        ``(3,)`` (x, y, z) position in Å of the centre of voxel ``(0, 0, 0)``.

    Returns
    -------
    ``(d, h, w)`` float64 mean potential per voxel (V); ``sum × pixel_spacing³`` is the
    integrated potential in V·Å³.
    """
    ps = float(pixel_spacing)
    pos = ((atoms.xyz - np.asarray(origin, dtype=np.float64)) / ps)[:, ::-1]  # (z, y, x) vox
    sig = np.sqrt(atoms.b / (8.0 * np.pi**2)) / ps  # (N, 5) voxels
    k = int(np.ceil(7.0 * float(sig.max()) + 0.5))
    offs = np.arange(-k, k + 1)
    base = np.rint(pos).astype(np.int64)
    weight = POTENTIAL_PER_AMPLITUDE * atoms.a / ps**3  # (N, 5)
    n = int(np.prod(shape))
    out = np.zeros(n, dtype=np.float64)
    step = max(1, 2_000_000 // (5 * offs.size**3))
    for s in range(0, len(pos), step):
        sl = slice(s, s + step)
        fz, fy, fx = (_voxel_fractions(pos[sl, a], base[sl, a], offs, sig[sl]) for a in range(3))
        vals = np.einsum("nt,nti,ntj,ntm->nijm", weight[sl], fz, fy, fx, optimize=True)
        iz, iy, ix = (base[sl, a, None] + offs[None, :] for a in range(3))
        ok = (iz >= 0) & (iz < shape[0]), (iy >= 0) & (iy < shape[1]), (ix >= 0) & (ix < shape[2])
        flat = (iz[:, :, None, None] * shape[1] + iy[:, None, :, None]) * shape[2] + ix[
            :, None, None, :
        ]
        keep = ok[0][:, :, None, None] & ok[1][:, None, :, None] & ok[2][:, None, None, :]
        out += np.bincount(flat[keep], weights=vals[keep], minlength=n)
    return out.reshape(shape)


def atoms_to_potential(atoms: Atoms, pixel_spacing: float) -> np.ndarray:
    """The voxel-averaged potential (V) on a grid centred on the atoms' ``f(0)``-weighted centroid.

    The grid's centre voxel ``n // 2`` is the centroid (the template's reference point); sizes
    are odd and leave 7 σ of the widest Gaussian around every atom.
    """
    ps = float(pixel_spacing)
    w = atoms.f0
    centroid = (atoms.xyz * w[:, None]).sum(axis=0) / w.sum()
    rel = (atoms.xyz - centroid)[:, ::-1] / ps
    k = int(np.ceil(7.0 * float(np.sqrt(atoms.b.max() / (8.0 * np.pi**2))) / ps + 0.5))
    half = np.ceil(np.abs(rel).max(axis=0)).astype(int) + k + 1
    shape = tuple(int(2 * h + 1) for h in half)
    origin = centroid - half[::-1] * ps
    return potential_on_grid(atoms, ps, shape, origin)  # type: ignore[arg-type]


def _atom_template(
    path: Path, pixel_spacing: float, *, name: str, threshold: float, density: float
) -> Template:
    data = atoms_to_potential(read_atoms(path), pixel_spacing)
    return make_template(
        data, pixel_spacing, name=name, source=str(path), threshold=threshold, density=density
    )


# --------------------------------------------------------------------------- entry point

EXAMPLES = ("peptide.pdb",)


def example_path(name: str) -> Path:
    """The path of a template file shipped with the package (``example:<name>``)."""
    if name not in EXAMPLES:
        known = ", ".join(EXAMPLES)
        raise InputError(f"example template {name!r} is not known; use one of: {known}")
    return Path(__file__).resolve().parents[1] / "data" / name


def load_template(
    spec: str,
    pixel_spacing: float,
    *,
    name: str | None = None,
    threshold: float = 0.05,
    density: float = 1.0,
    source_pixel_spacing: float | None = None,
) -> Template:
    """Build a template from ``builtin:<shape>[:<scale>]``, ``example:<file>``, a map or a model.

    Results are cached per process (keyed by the arguments and the file's size and mtime).

    Raises
    ------
    InputError
        An unknown shape, a missing or unreadable file, an unknown extension.
    """
    if spec.startswith("example:"):
        spec = str(example_path(spec.partition(":")[2]))
    key: tuple[Hashable, ...] = (
        spec, float(pixel_spacing), name, threshold, density, source_pixel_spacing
    )
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
    label = name or Path(path.name.removesuffix(".gz")).stem
    if suffix in MAP_SUFFIXES:
        return _map_template(
            path,
            pixel_spacing,
            source_pixel_spacing,
            name=label,
            threshold=threshold,
            density=density,
        )
    if is_atomic_model(path):
        return _atom_template(path, pixel_spacing, name=label, threshold=threshold, density=density)
    raise InputError(
        f"template {spec}: unknown kind; use builtin:<shape>, .mrc/.map, .pdb/.ent/.cif(.gz)"
    )
