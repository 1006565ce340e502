"""Templates: built-in shapes, MRC maps resampled to the sample spacing, PDB/mmCIF models."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from faket_dask.errors import InputError
from faket_dask.io.mrc import write_mrc
from faket_dask.stages.templates import (
    BUILTIN_SHAPES,
    POTENTIAL_PER_AMPLITUDE,
    atoms_to_potential,
    builtin_template,
    example_path,
    load_template,
    potential_on_grid,
    read_atoms,
    resample_map,
    rotate_template,
)

pytestmark = pytest.mark.timeout(60)


def sphere_map(n: int, radius_px: float) -> np.ndarray:
    """A solid sphere centred on voxel n // 2, anti-aliased by 4^3 supersampling."""
    sub = 4
    ax = (np.arange(n * sub) + 0.5) / sub - 0.5 - n // 2
    z, y, x = np.meshgrid(ax, ax, ax, indexing="ij", sparse=True)
    inside = (z**2 + y**2 + x**2 <= radius_px**2).astype(np.float64)
    return inside.reshape(n, sub, n, sub, n, sub).mean(axis=(1, 3, 5))


def equivalent_radius(density: np.ndarray, plateau: float = 1.0) -> float:
    """Radius (voxels) of the ball with the same integrated density."""
    return float((3.0 * density.sum() / plateau / (4.0 * np.pi)) ** (1.0 / 3.0))


def half_max_radius(density: np.ndarray) -> float:
    """Radius (voxels) from the count of voxels at or above half the plateau."""
    count = np.count_nonzero(density >= 0.5 * density.max())
    return float((3.0 * count / (4.0 * np.pi)) ** (1.0 / 3.0))


@pytest.mark.parametrize("shape", sorted(BUILTIN_SHAPES))
def test_builtins_scale_with_pixel_spacing(shape):
    fine = builtin_template(shape, 5.0)
    coarse = builtin_template(shape, 10.0)
    # same physical volume: 8x the voxels at half the spacing (edges make it approximate)
    ratio = fine.volume_voxels / coarse.volume_voxels
    assert 6.0 < ratio < 10.5
    for t in (fine, coarse):
        assert all(n % 2 == 1 for n in t.density.shape)
        assert t.density.dtype == np.float32
        assert (t.density >= 0).all()
        inside = t.density > t.level
        assert abs(t.density[inside].mean() - 1.0) < 1e-5  # mean density inside is 1


def test_builtins_are_distinct():
    vols = {s: builtin_template(s, 10.0).volume_voxels for s in BUILTIN_SHAPES}
    assert len(set(vols.values())) == len(vols)
    # the barrel is hollow: its centre voxel is empty; the sphere's is not
    barrel = builtin_template("proteasome", 10.0)
    c = tuple(n // 2 for n in barrel.density.shape)
    assert barrel.density[c] == 0
    ball = builtin_template("sphere", 10.0)
    assert ball.density[tuple(n // 2 for n in ball.density.shape)] > 0


def test_builtin_scale_and_errors():
    big = load_template("builtin:sphere:2", 10.0)
    small = load_template("builtin:sphere", 10.0)
    assert 6 < big.volume_voxels / small.volume_voxels < 10
    with pytest.raises(InputError, match="not known"):
        load_template("builtin:cube", 10.0)
    with pytest.raises(InputError, match="scale"):
        load_template("builtin:sphere:big", 10.0)
    with pytest.raises(InputError, match="does not exist"):
        load_template("nowhere.mrc", 10.0)


def test_rotation_is_deterministic_and_keeps_volume():
    t = builtin_template("lshape", 10.0)
    r = Rotation.from_euler("ZYZ", [30, 70, -20], degrees=True).as_matrix()
    a, b = rotate_template(t, r), rotate_template(t, r)
    assert np.array_equal(a.density, b.density) and np.array_equal(a.mask, b.mask)
    assert abs(a.density.sum() - t.density.sum()) / t.density.sum() < 0.05
    ident = rotate_template(t, np.eye(3))
    assert abs(int(ident.mask.sum()) - t.volume_voxels) <= 0.02 * t.volume_voxels


def test_rotation_direction_matches_matrix():
    # a rod along z, rotated by 90 deg about y, lies along x
    rod = builtin_template("rod", 10.0)
    box = rotate_template(rod, Rotation.from_euler("y", 90, degrees=True).as_matrix())
    extent = box.mask.shape  # (z, y, x)
    assert extent[2] > 2 * extent[0]


@pytest.mark.parametrize(("src", "dst"), [(4.0, 10.0), (13.0, 10.0), (10.0, 6.0)])
def test_mrc_sphere_keeps_radius_in_angstrom(tmp_path, src, dst):
    radius_a = 60.0
    n = int(2 * radius_a / src) + 9
    data = sphere_map(n, radius_a / src).astype(np.float32)
    path = tmp_path / "sphere.mrc"
    write_mrc(path, data, voxel_size=src)
    t = load_template(str(path), dst, threshold=0.05)
    want = radius_a / dst
    plateau = float(t.density.max())
    assert abs(equivalent_radius(t.density, plateau) - want) <= 0.5
    assert abs(half_max_radius(t.density) - want) <= 0.5
    # the sphere stays centred on the template's centre voxel
    idx = np.argwhere(t.density > 0)
    com = (idx * t.density[t.density > 0][:, None]).sum(0) / t.density.sum()
    assert np.abs(com - t.centre).max() < 0.25


def test_resample_keeps_centre_and_radius():
    data = sphere_map(31, 8.0)
    out = resample_map(data, 5.0, 7.5)
    assert all(n % 2 == 1 for n in out.shape)
    assert abs(equivalent_radius(out) - 8.0 * 5.0 / 7.5) <= 0.5


def test_mrc_without_voxel_size_needs_one(tmp_path):
    path = tmp_path / "nosize.mrc"
    write_mrc(path, sphere_map(15, 4.0).astype(np.float32))
    with pytest.raises(InputError, match="pixel_spacing"):
        load_template(str(path), 10.0)
    t = load_template(str(path), 10.0, source_pixel_spacing=5.0)
    assert abs(half_max_radius(t.density) - 2.0) <= 0.5


PDB_TEXT = """\
HEADER    TEST
ATOM      1  N   ALA A   1       0.000   0.000   0.000  1.00 10.00           N
ATOM      2  CA  ALA A   1       1.458   0.000   0.000  1.00 10.00           C
ATOM      3  C   ALA A   1       2.009   1.420   0.000  1.00 10.00           C
ATOM      4  O   ALA A   1       1.251   2.390   0.000  1.00 10.00           O
ATOM      5  CB AALA A   1       1.988  -0.773  -1.199  0.50 10.00           C
ATOM      6  CB BALA A   1       9.988  -9.773  -9.199  0.50 10.00           C
HETATM    7 FE   HEM A   2       6.000   3.000   2.000  1.00 10.00          FE
HETATM    8  O   HOH A   3      30.000  30.000  30.000  1.00 10.00           O
ATOM      9  SG  CYS A   4      -4.000  -2.000   3.000  1.00 10.00
ENDMDL
ATOM     10  C   ALA A   5      50.000  50.000  50.000  1.00 10.00           C
"""

CIF_TEXT = """\
data_1ABC
_entry.id 1ABC
#
loop_
_atom_site.group_PDB
_atom_site.id
_atom_site.type_symbol
_atom_site.label_atom_id
_atom_site.label_alt_id
_atom_site.label_comp_id
_atom_site.label_asym_id
_atom_site.label_seq_id
_atom_site.Cartn_x
_atom_site.Cartn_y
_atom_site.Cartn_z
_atom_site.occupancy
_atom_site.B_iso_or_equiv
_atom_site.auth_seq_id
_atom_site.auth_asym_id
_atom_site.pdbx_PDB_model_num
ATOM 1 N N . ALA A 1 0.000 0.000 0.000 1.00 10.00 1 A 1
ATOM 2 C CA . ALA A 1 1.458 0.000 0.000 1.00 10.00 1 A 1
ATOM 3 C C . ALA A 1 2.009 1.420 0.000 1.00 10.00 1 A 1
ATOM 4 O O . ALA A 1 1.251 2.390 0.000 1.00 10.00 1 A 1
ATOM 5 C CB A ALA A 1 1.988 -0.773 -1.199 0.50 10.00 1 A 1
ATOM 6 C CB B ALA A 1 9.988 -9.773 -9.199 0.50 10.00 1 A 1
HETATM 7 FE FE . HEM B . 6.000 3.000 2.000 1.00 10.00 2 A 1
HETATM 8 O O . HOH C . 30.000 30.000 30.000 1.00 10.00 3 A 1
ATOM 9 S "SG" . CYS A
4 -4.000 -2.000 3.000 1.00 10.00 4 A 1
ATOM 10 C C . ALA A 5 50.000 50.000 50.000 1.00 10.00 5 A 2
#
"""


def test_pdb_mmcif_and_gzip_read_alike(tmp_path):
    import gzip

    (tmp_path / "m.pdb").write_text(PDB_TEXT)
    (tmp_path / "m.cif").write_text(CIF_TEXT)
    (tmp_path / "m.cif.gz").write_bytes(gzip.compress(CIF_TEXT.encode()))
    p, c, z = (read_atoms(tmp_path / n) for n in ("m.pdb", "m.cif", "m.cif.gz"))
    # first model, altloc A only, no water; the element from the name when columns 77-78 are blank
    assert len(p.xyz) == 7
    np.testing.assert_allclose(p.xyz[-1], [-4.0, -2.0, 3.0])
    for other in (c, z):
        np.testing.assert_allclose(p.xyz, other.xyz)
        np.testing.assert_allclose(p.a, other.a)
        np.testing.assert_allclose(p.b, other.b)
    assert p.entry_id is None and c.entry_id == "1ABC" == z.entry_id
    # f(0) = sum of the five a_i of Peng et al. 1996 (ITC Vol. C Table 4.3.2.2): C 2.5088 Å
    np.testing.assert_allclose(p.f0[1], 0.0893 + 0.2563 + 0.7570 + 1.0487 + 0.3575, rtol=1e-6)
    # the B-factor (10 Å^2) is added to every Gaussian's width: C's b_1 is 0.2465
    assert p.b[1, 0] == pytest.approx(0.2465 + 10.0, rel=1e-6)
    assert p.f0[5] > p.f0[6] > p.f0[1] > p.f0[3]  # Fe > S > C > O


def _closed_form(atoms, ps: float, shape, origin) -> np.ndarray:
    """Voxel means of V(r) = C sum_i a_i (4 pi / b_i)^1.5 exp(-4 pi^2 r^2 / b_i), no cut-off.

    Written from the form factors directly: int_lo^hi exp(-al x^2) dx =
    0.5 sqrt(pi / al) (erf(sqrt(al) hi) - erf(sqrt(al) lo)) per axis, al = 4 pi^2 / b.
    """
    from scipy.special import erf

    axes = [origin[2 - k] + ps * np.arange(shape[k]) for k in range(3)]  # z, y, x centres (Å)
    out = np.zeros(shape)
    for xyz, a_row, b_row in zip(atoms.xyz, atoms.a, atoms.b, strict=True):
        for a, b in zip(a_row, b_row, strict=True):
            al = 4 * np.pi**2 / b
            f = []
            for k in range(3):
                d = axes[k] - xyz[2 - k]
                f.append(
                    0.5 * np.sqrt(np.pi / al)
                    * (erf(np.sqrt(al) * (d + ps / 2)) - erf(np.sqrt(al) * (d - ps / 2)))
                )
            amp = POTENTIAL_PER_AMPLITUDE * a * (4 * np.pi / b) ** 1.5 / ps**3
            out += amp * f[0][:, None, None] * f[1][None, :, None] * f[2][None, None, :]
    return out


@pytest.mark.parametrize("ps", [1.0, 2.5])
def test_peptide_potential_matches_the_closed_form(ps):
    """The shipped peptide's potential equals the form factors' closed form to 1e-5."""
    atoms = read_atoms(example_path("peptide.pdb"))
    assert len(atoms.xyz) == 79
    lo = atoms.xyz.min(axis=0) - 8.0
    shape = tuple(int(v) for v in np.ceil((atoms.xyz.max(axis=0) + 8.0 - lo) / ps)[::-1])
    got = potential_on_grid(atoms, ps, shape, lo)
    want = _closed_form(atoms, ps, shape, lo)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * want.max())
    # the integrated potential (V·Å³) is C * sum f(0) over the atoms
    total = POTENTIAL_PER_AMPLITUDE * atoms.f0.sum()
    assert got.sum() * ps**3 == pytest.approx(total, rel=0.02)
    assert atoms_to_potential(atoms, ps).sum() * ps**3 == pytest.approx(total, rel=1e-4)


def test_pdb_template_renders(tmp_path):
    (tmp_path / "m.pdb").write_text(PDB_TEXT)
    t = load_template(str(tmp_path / "m.pdb"), 2.0)
    assert t.volume_voxels > 10
    assert np.isfinite(t.density).all() and t.density.max() > 0
    # the iron atom makes the densest voxel, where it sits relative to the f(0)-weighted centroid
    atoms = read_atoms(tmp_path / "m.pdb")
    centroid = (atoms.xyz * atoms.f0[:, None]).sum(0) / atoms.f0.sum()
    iron = atoms.xyz[np.argmax(atoms.f0)]
    peak = np.array(np.unravel_index(np.argmax(t.density), t.density.shape))
    np.testing.assert_array_equal((peak - t.centre)[::-1], np.rint((iron - centroid) / 2.0))
    # rotating and rendering works like any other template
    box = rotate_template(t, Rotation.random(random_state=3).as_matrix())
    assert box.mask.any()
    # mmCIF gives the same map; the shipped example loads by name
    (tmp_path / "m.cif").write_text(CIF_TEXT)
    t2 = load_template(str(tmp_path / "m.cif"), 2.0)
    np.testing.assert_allclose(t.density, t2.density, rtol=1e-6)
    pep = load_template("example:peptide.pdb", 2.0)
    assert pep.name == "peptide" and 10 <= 2 * 2.0 * pep.radius_px <= 40  # ~21 Å helix
    with pytest.raises(InputError, match="not known"):
        load_template("example:nope.pdb", 2.0)


def test_bad_model_files(tmp_path):
    (tmp_path / "empty.pdb").write_text("HEADER nothing\n")
    with pytest.raises(InputError, match="no atoms"):
        load_template(str(tmp_path / "empty.pdb"), 2.0)
    (tmp_path / "x.xyz").write_text("1\n")
    with pytest.raises(InputError, match="unknown kind"):
        load_template(str(tmp_path / "x.xyz"), 2.0)
