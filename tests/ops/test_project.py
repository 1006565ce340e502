"""ops/project: a volume file to a noiseless tilt-series file, on this process's device."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from faket_dask.io import Volume, write_volume
from faket_dask.ops.project import project
from faket_dask.options import ProjectOptions

pytestmark = pytest.mark.timeout(60)


def test_project_writes_line_integrals_with_the_volumes_spacing(tmp_path):
    vol = np.random.default_rng(0).random((6, 8, 10)).astype(np.float32)
    write_volume(tmp_path / "v.mrc", Volume(vol, 4.5))
    angles = np.array([-30.0, 0.0, 30.0])
    out = tmp_path / "t.mrc"
    done = project(ProjectOptions(tmp_path / "v.mrc", out, angles, device="cpu"))
    assert done.shape == (3, 8, 10)
    with mrcfile.open(out) as m:  # read back by the reference reader, not ours
        tilts = np.asarray(m.data)
        assert float(m.voxel_size.x) == pytest.approx(4.5)
    # at 0° the projection is the (negated: dense is dark) sum along Z
    np.testing.assert_allclose(tilts[1], -vol.sum(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.loadtxt(out.with_suffix(".tlt")), angles)
    assert not np.allclose(tilts[0], tilts[1])  # the tilts are not copies of one another


def test_project_takes_a_pixel_spacing_and_a_detector_width(tmp_path):
    vol = np.ones((4, 6, 8), np.float32)
    write_volume(tmp_path / "v.mrc", Volume(vol, None))
    out = tmp_path / "t.mrc"
    opts = ProjectOptions(
        tmp_path / "v.mrc", out, np.array([0.0, 20.0]), detector_width=12, pixel_spacing=7.0
    )
    assert project(opts).shape == (2, 6, 12)
    with mrcfile.open(out) as m:
        assert float(m.voxel_size.x) == pytest.approx(7.0)
        row = np.asarray(m.data)[0, 3]
    # the volume's 8 columns sit in the middle of the 12-pixel detector
    np.testing.assert_allclose(row, [0, 0, *[-4.0] * 8, 0, 0], atol=1e-5)
