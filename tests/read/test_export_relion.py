"""RELION 5 export: STAR files read back with starfile, geometry checked against the projector."""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
import torch
from _tiny_store import make_store

from faket_dask.angles import read_tilt_file
from faket_dask.errors import InputError
from faket_dask.pipeline.simulate import _misalign
from faket_dask.read.export_relion import (
    PARTICLE_COLUMNS,
    TILT_COLUMNS,
    TOMOGRAM_COLUMNS,
    RelionOptions,
    export_relion5,
    projection_matrices,
    tilt_geometry,
)
from faket_dask.stages.projection import project

pytestmark = pytest.mark.timeout(300)

# the columns the issue lists (RELION 5's tomography set); the export adds only the documented
# rlnTomoReconstructedTomogram, rlnMicrographName, rlnTomoParticleName, rlnClassNumber and
# rlnOpticsGroup (what RELION needs to find the images and the optics group, and the class)
LISTED_TOMOGRAMS = {
    "rlnTomoName", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast",
    "rlnMicrographOriginalPixelSize", "rlnTomoHand", "rlnTomoTiltSeriesPixelSize",
    "rlnTomoTiltSeriesStarFile", "rlnTomoTomogramBinning", "rlnTomoSizeX", "rlnTomoSizeY",
    "rlnTomoSizeZ",
}  # fmt: skip
LISTED_TILTS = {
    "rlnTomoNominalStageTiltAngle", "rlnMicrographPreExposure", "rlnDefocusU", "rlnDefocusV",
    "rlnDefocusAngle", "rlnTomoXTilt", "rlnTomoYTilt", "rlnTomoZRot", "rlnTomoXShiftAngst",
    "rlnTomoYShiftAngst",
}  # fmt: skip
LISTED_PARTICLES = {
    "rlnTomoName", "rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
    "rlnCenteredCoordinateZAngst", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi",
}  # fmt: skip


@pytest.mark.parametrize("axis", [0.0, 12.0])
def test_relion_projection_reproduces_the_projector(axis):
    """A point projected by the real projector (+ misalignment) lands where RELION's matrices,
    built from the exported angles and shifts with RELION's own formula, put it."""
    nz, ny, nx, h, w, size_z, ps = 12, 16, 20, 16, 24, 8, 2.0
    vol = np.zeros((nz, ny, nx), np.float32)
    pts = [(3, 5, 13), (9, 11, 4)]
    theta = np.array([-50.0, -20.0, 0.0, 30.0, 60.0])
    shifts = np.random.default_rng(0).normal(0, 1.5, (theta.size, 2)) if axis else None
    g = tilt_geometry(theta, (nz, ny, nx), (h, w), size_z, axis, shifts)
    table = pd.DataFrame(
        {
            "rlnTomoXTilt": g["rlnTomoXTilt"],
            "rlnTomoYTilt": g["rlnTomoYTilt"],
            "rlnTomoZRot": g["rlnTomoZRot"],
            "rlnTomoXShiftAngst": g["shift_x"] * ps,
            "rlnTomoYShiftAngst": g["shift_y"] * ps,
        }
    )
    mats = projection_matrices(table, ps, (nx, ny, size_z), (w, h))
    yy, xx = np.mgrid[:h, :w]
    for z, y, x in pts:
        vol[:] = 0
        vol[z, y, x] = 1.0
        proj = project(torch.from_numpy(vol), theta, detector_width=w)
        proj = -_misalign(proj, axis, None if shifts is None else shifts.tolist()).numpy()
        p = np.array([x, y, z - nz / 2 + size_z / 2, 1.0])  # tomogram pixel of the voxel
        for t in range(theta.size):
            centroid = np.array([(proj[t] * xx).sum(), (proj[t] * yy).sum()]) / proj[t].sum()
            np.testing.assert_allclose(centroid, (mats[t] @ p)[:2], atol=0.15)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # classes large enough to keep their centre voxel in the mask binned x2 (a mode)
    particles = [
        {"name": "ball", "template": "builtin:sphere", "count": 2},
        {"name": "big", "template": "builtin:sphere:1.4", "count": 1},
    ]
    return make_store(tmp_path_factory.mktemp("relion"), n=2, sample={"particles": particles})


def test_relion5_set_reads_back_and_every_particle_hits_its_class(store, tmp_path):
    from faket_dask.read.access import open_dataset

    ds = open_dataset(store)
    res = export_relion5(store, tmp_path / "r5", options=RelionOptions(dose_per_tilt=2.5))
    out = tmp_path / "r5"
    tomos = starfile.read(out / "tomograms.star", always_dict=True)["global"]
    assert tuple(tomos.columns) == TOMOGRAM_COLUMNS and LISTED_TOMOGRAMS <= set(tomos.columns)
    assert list(tomos.rlnTomoName) == [f"sample_{i:06d}" for i in ds.ids]
    blocks = starfile.read(out / "particles.star", always_dict=True)
    assert set(blocks) == {"optics", "particles"}
    parts = blocks["particles"]
    assert tuple(parts.columns) == PARTICLE_COLUMNS and LISTED_PARTICLES <= set(parts.columns)
    opt = starfile.read(out / "optimisation_set.star", always_dict=True)
    (opt,) = opt.values()
    assert opt["rlnTomoParticlesFile"] == "particles.star"
    assert opt["rlnTomoTomogramsFile"] == "tomograms.star"
    n_particles = 0
    for sid, row in zip(ds.ids, tomos.itertuples(index=False), strict=True):
        tilts = ds.sample(sid, "tilts")
        ps = row.rlnTomoTiltSeriesPixelSize
        assert ps == pytest.approx(tilts.attrs["pixel_spacing"])
        (ts,) = starfile.read(out / row.rlnTomoTiltSeriesStarFile, always_dict=True).values()
        assert tuple(ts.columns) == TILT_COLUMNS and LISTED_TILTS <= set(ts.columns)
        angles = tilts.tilt_angle.values
        np.testing.assert_allclose(ts.rlnTomoNominalStageTiltAngle, angles, atol=1e-6)
        np.testing.assert_allclose(ts.rlnMicrographPreExposure, 2.5 * np.arange(angles.size))
        stack = out / "tilt_series" / f"{row.rlnTomoName}.mrcs"
        with mrcfile.open(stack) as mrc:
            assert int(mrc.header.ispg) == 0 and mrc.voxel_size.x == pytest.approx(ps)
            np.testing.assert_array_equal(mrc.data, tilts.styled.values)
        np.testing.assert_allclose(read_tilt_file(stack.with_suffix(".tlt")), angles, atol=1e-6)
        # every particle: centred Å -> tomogram pixel (RELION) -> voxel of the binned tomogram
        b = int(row.rlnTomoTomogramBinning)
        with mrcfile.open(out / row.rlnTomoReconstructedTomogram) as mrc:
            assert mrc.data.shape[0] * b == row.rlnTomoSizeZ
            assert mrc.voxel_size.x == pytest.approx(ps * b)
        mask = mrcfile.read(out / "tomograms" / f"{row.rlnTomoName}_class_mask.mrc")
        sel = parts[parts.rlnTomoName == row.rlnTomoName]
        size = np.array([row.rlnTomoSizeX, row.rlnTomoSizeY, row.rlnTomoSizeZ], float)
        c = sel[[f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]].to_numpy()
        pix = c / ps + size / 2  # (x, y, z) pixel of the unbinned tomogram grid
        vox = np.floor(pix / b).astype(int)
        got = mask[vox[:, 2], vox[:, 1], vox[:, 0]]
        np.testing.assert_array_equal(got, sel.rlnClassNumber.to_numpy())
        # and at full resolution: the tomogram is the volume's centred Z range
        vol = ds.sample(sid, "volume").class_mask.values
        v = np.rint(pix + np.array([0.0, 0.0, vol.shape[0] / 2 - size[2] / 2])).astype(int)
        np.testing.assert_array_equal(vol[v[:, 2], v[:, 1], v[:, 0]], sel.rlnClassNumber)
        table = ds.particles(sid)
        assert len(sel) == int((table.kind == "particle").sum()) > 0
        n_particles += len(sel)
    assert res["particles_n"] == n_particles and res["tilt_series"] == len(ds.ids)


def test_relion5_bad_input(store, tmp_path):
    with pytest.raises(InputError, match="modality"):
        export_relion5(store, tmp_path / "a", options=RelionOptions(modality="nope"))
    with pytest.raises(InputError, match="not a complete sample"):
        export_relion5(store, tmp_path / "b", sample_ids=[9])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("keep")
    with pytest.raises(InputError, match="not empty"):
        export_relion5(store, tmp_path / "c")
    assert (tmp_path / "c" / "x").read_text() == "keep"


def test_cli_export_relion5_and_ngff04(store, tmp_path):
    from _cli import assert_one_line_exit_2, run_cli

    proc = run_cli("export", store, "--relion5", tmp_path / "r5", "--ngff04", tmp_path / "ng")
    assert proc.returncode == 0, proc.stderr
    assert "RELION 5 set (2 tilt-series" in proc.stdout and "NGFF 0.4 images" in proc.stdout
    assert (tmp_path / "r5" / "optimisation_set.star").is_file()
    assert (tmp_path / "ng" / "sample_000001" / "tomogram.zarr" / ".zattrs").is_file()
    proc = run_cli("export", store, "--sample", 1, "--relion5", tmp_path / "one")
    assert proc.returncode == 0, proc.stderr
    tomos = starfile.read(tmp_path / "one" / "tomograms.star", always_dict=True)["global"]
    assert list(tomos.rlnTomoName) == ["sample_000001"]
    assert_one_line_exit_2(run_cli("export", store, "-o", tmp_path / "x.mrc"), "--sample")
    assert_one_line_exit_2(run_cli("export", store, "--relion5", tmp_path / "r5"), "not empty")
