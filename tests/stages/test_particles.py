"""Particle tables: uniform orientations, Euler/quaternion conventions, STAR/CSV/SHREC I/O."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import starfile
from scipy import stats
from scipy.spatial.transform import Rotation

from faket_dask.errors import InputError
from faket_dask.stages import particles
from faket_dask.stages.particles import (
    COLUMNS,
    ParticleRows,
    StarGeometry,
    angle_between,
    quaternions_to_matrices,
    random_quaternions,
    read_particle_list,
    relion_euler_from_quaternions,
    star_text,
    table_from_arrays,
    table_record,
    to_csv,
    to_shrec,
    to_star,
)

pytestmark = pytest.mark.timeout(60)

SHAPE = (20, 40, 50)  # (Z, Y, X)
PS = 7.5


def relion_matrix(rot: float, tilt: float, psi: float) -> np.ndarray:
    """RELION's Euler_angles2matrix (src/euler.cpp), written out independently."""
    a, b, g = np.radians([rot, tilt, psi])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    return np.array(
        [
            [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
            [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
            [sc, ss, cb],
        ]
    )


def small_table(n: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    kinds = ["particle"] * (n - 2) + ["membrane", "fiducial"]
    names = [f"c{i % 3 + 1}" for i in range(n - 2)] + ["membrane", "fiducial"]
    cids = [i % 3 + 1 for i in range(n - 2)] + [4, 5]
    pos = rng.integers(0, [SHAPE[2], SHAPE[1], SHAPE[0]], size=(n, 3)).astype(float)
    return table_from_arrays(
        ParticleRows(
            ids=np.arange(1, n + 1),
            class_ids=np.array(cids),
            class_names=names,
            kinds=kinds,
            positions_xyz=pos,
            quaternions=random_quaternions(rng, n),
            pixel_spacing=PS,
            voxels=rng.integers(10, 100, n),
        )
    )


def test_orientations_uniform_over_so3():
    q = random_quaternions(np.random.default_rng(123), 20000)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    assert (q[:, 0] >= 0).all()  # canonical sign
    m = quaternions_to_matrices(q)
    # the rotated z axis is uniform on the sphere: cos(theta) ~ U[-1, 1], azimuth ~ U[-pi, pi]
    zaxis = m[:, :, 2]
    assert stats.kstest(zaxis[:, 2], stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3
    phi = np.arctan2(zaxis[:, 1], zaxis[:, 0])
    assert stats.kstest(phi, stats.uniform(loc=-np.pi, scale=2 * np.pi).cdf).pvalue > 1e-3
    # so is the rotated x axis, and the rotation angle has density (1 - cos w) / pi on [0, pi]
    assert stats.kstest(m[:, 2, 0], stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3
    omega = angle_between(q, np.array([1.0, 0, 0, 0])) * np.pi / 180

    def cdf(w):
        return (w - np.sin(w)) / np.pi

    assert stats.kstest(omega, cdf).pvalue > 1e-3
    # sign-invariant: E[q q^T] = I / 4 for the uniform (Haar) measure, whatever the sign choice
    np.testing.assert_allclose(q.T @ q / len(q), np.eye(4) / 4, atol=0.01)


def test_euler_and_quaternion_agree_with_relion():
    q = random_quaternions(np.random.default_rng(5), 50)
    eul = relion_euler_from_quaternions(q)
    m = quaternions_to_matrices(q)
    for (rot, tilt, psi), mi in zip(eul, m, strict=True):
        # our R (template -> particle) is the transpose of RELION's matrix
        np.testing.assert_allclose(relion_matrix(rot, tilt, psi).T, mi, atol=1e-9)
    assert (eul[:, 1] >= 0).all() and (eul[:, 1] <= 180).all()
    # q and -q are the same rotation
    np.testing.assert_allclose(quaternions_to_matrices(-q), m, atol=1e-12)


def test_table_columns_and_angstrom():
    t = small_table()
    assert tuple(t.columns) == COLUMNS
    np.testing.assert_allclose(t["x_angst"], t["x"] * PS)
    np.testing.assert_allclose(t["z_angst"], t["z"] * PS)


@pytest.mark.parametrize("frame", ["volume", "tomogram", "relion5"])
def test_star_reads_back(tmp_path, frame):
    t = small_table()
    where = StarGeometry(SHAPE, PS, frame, bin=2, tomogram_thickness=8)
    path = to_star(t, tmp_path / "p.star", where)
    star = starfile.read(path, always_dict=True)
    assert set(star) == {"optics", "particles"}
    p = star["particles"]
    parts = t[t["kind"] == "particle"]
    assert len(p) == len(parts)
    np.testing.assert_allclose(p["rlnAngleRot"], parts["rot"], atol=1e-5)
    np.testing.assert_allclose(p["rlnAngleTilt"], parts["tilt"], atol=1e-5)
    np.testing.assert_allclose(p["rlnAnglePsi"], parts["psi"], atol=1e-5)
    np.testing.assert_array_equal(p["rlnClassNumber"], parts["class_id"])
    if frame == "volume":
        np.testing.assert_allclose(p["rlnCoordinateX"], parts["x"], atol=1e-5)
        np.testing.assert_allclose(p["rlnCoordinateZ"], parts["z"], atol=1e-5)
    elif frame == "tomogram":
        np.testing.assert_allclose(p["rlnCoordinateX"], (parts["x"] + 0.5) / 2 - 0.5, atol=1e-5)
        zoff = (SHAPE[0] / 2 - 8) / 2
        np.testing.assert_allclose(
            p["rlnCoordinateZ"], (parts["z"] + 0.5) / 2 - 0.5 - zoff, atol=1e-5
        )
        assert star["optics"]["rlnImagePixelSize"][0] == pytest.approx(2 * PS)
    else:
        np.testing.assert_allclose(
            p["rlnCenteredCoordinateXAngst"], (parts["x"] - SHAPE[2] / 2) * PS, atol=1e-4
        )
        np.testing.assert_allclose(
            p["rlnCenteredCoordinateZAngst"], (parts["z"] - SHAPE[0] / 2) * PS, atol=1e-4
        )
    # and it imports back to the same positions and rotations
    back = read_particle_list(path, pixel_spacing=PS, shape=SHAPE)
    if frame != "tomogram":
        np.testing.assert_allclose(back[["x", "y", "z"]], parts[["x", "y", "z"]], atol=1e-4)
    q0, q1 = parts[["qw", "qx", "qy", "qz"]].to_numpy(), back[["qw", "qx", "qy", "qz"]].to_numpy()
    assert angle_between(q0, q1).max() < 1e-3


def test_csv_round_trip(tmp_path):
    t = small_table()
    back = read_particle_list(to_csv(t, tmp_path / "p.csv"), pixel_spacing=PS)
    pd.testing.assert_frame_equal(
        back.reset_index(drop=True), t.reset_index(drop=True), check_dtype=False, atol=1e-5
    )


def test_shrec_round_trip(tmp_path):
    t = small_table()
    path = to_shrec(t, tmp_path / "particle_locations.txt")
    lines = path.read_text().splitlines()
    assert len(lines) == len(t)
    assert lines[-2].split()[0] == "vesicle" and lines[-1].split()[0] == "fiducial"
    assert len(lines[0].split()) == 7
    back = read_particle_list(path, pixel_spacing=PS)
    np.testing.assert_allclose(back[["x", "y", "z"]], t[["x", "y", "z"]])
    parts = t["kind"] == "particle"
    q0 = t.loc[parts, ["qw", "qx", "qy", "qz"]].to_numpy()
    q1 = back.loc[parts, ["qw", "qx", "qy", "qz"]].to_numpy()
    assert angle_between(q0, q1).max() < 1e-2  # 4 decimals of a degree
    assert list(back["kind"]) == list(t["kind"])
    # ZXZ angles of the same rotation
    r = Rotation.from_euler("ZXZ", [float(v) for v in lines[0].split()[4:]], degrees=True)
    np.testing.assert_allclose(r.as_matrix(), quaternions_to_matrices(q0[:1])[0], atol=1e-5)


def test_bad_lists(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_particle_list(tmp_path / "none.csv")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="lacks"):
        read_particle_list(tmp_path / "bad.csv")
    (tmp_path / "bad.txt").write_text("ribo 1 2\n")
    with pytest.raises(InputError, match="expected"):
        read_particle_list(tmp_path / "bad.txt")
    with pytest.raises(InputError, match="frame"):
        to_star(small_table(), tmp_path / "x.star", StarGeometry(SHAPE, PS, "nowhere"))


def test_one_star_route(tmp_path, monkeypatch):
    # to_star writes star_text; table_record keeps the same text beside the stored columns
    t = small_table()
    where = StarGeometry(SHAPE, PS, tomo_name="s_000003")
    path = to_star(t, tmp_path / "p.star", where)
    text = star_text(t, where)
    assert path.read_text() == text
    assert not text.startswith("#")  # no time stamp: the same table gives the same text
    assert len(starfile.read(path)["particles"]) == int((t["kind"] == "particle").sum())
    everything = starfile.read(tmp_path / "p.star", always_dict=True)
    (tmp_path / "all.star").write_text(star_text(t, StarGeometry(SHAPE, PS), kinds=None))
    assert len(starfile.read(tmp_path / "all.star")["particles"]) == len(t)
    rec = table_record(
        t, shape=SHAPE, pixel_spacing=PS, classes={1: "ribo", 2: "rod"}, tomo_name="s_000003"
    )
    assert rec.star == text and list(rec.columns) == list(t.columns)
    np.testing.assert_array_equal(rec.columns["x"], t["x"].to_numpy())
    classes = {"1": "ribo", "2": "rod"}
    assert rec.attrs == {"pixel_spacing": PS, "shape": list(SHAPE), "classes": classes}
    assert set(everything) == {"optics", "particles"}
    monkeypatch.setattr(particles, "STAR_ATTR_MAX_ROWS", len(t) - 1)
    assert table_record(t, shape=SHAPE, pixel_spacing=PS, classes={}, tomo_name="x").star is None

