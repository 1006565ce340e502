"""ops/reconstruct: a tilt-series file to a tomogram file by weighted back-projection."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import torch

from faket_dask.errors import InputError
from faket_dask.io import TiltSeries, write_tilt_series
from faket_dask.ops.reconstruct import ReconstructOptions, reconstruct
from faket_dask.stages.projection import project

pytestmark = pytest.mark.timeout(120)

Z, Y, X = 16, 8, 32


def _ball() -> np.ndarray:
    zz, xx = np.mgrid[0:Z, 0:X]
    slab = ((zz - 8) ** 2 + (xx - 12) ** 2 <= 16).astype(np.float32)
    return np.repeat(slab[:, None, :], Y, axis=1)


def _tilts(tmp_path, angles, spacing=3.0):
    tilts = project(torch.from_numpy(_ball()), angles, detector_width=X).numpy()
    path = tmp_path / "ts.mrc"
    write_tilt_series(path, TiltSeries(tilts, np.asarray(angles), spacing))  # with ts.tlt
    return path


def test_reconstruct_finds_the_ball_and_scales_the_voxel_size(tmp_path):
    angles = np.arange(-60.0, 61.0, 5.0)
    out = tmp_path / "tomo.mrc"
    shape = reconstruct(ReconstructOptions(_tilts(tmp_path, angles), out, Z, bin=1, device="cpu"))
    assert shape == (Z, Y, X)
    with mrcfile.open(out) as m:
        tomo = np.asarray(m.data)
        assert float(m.voxel_size.x) == pytest.approx(3.0)
    # the tilts are negated (dense is dark), so is the tomogram: the ball is its darkest part
    middle = -tomo[:, Y // 2]
    assert np.corrcoef(middle.ravel(), _ball()[:, Y // 2].ravel())[0, 1] > 0.7
    # its centroid is the ball's centre (measured: z 7.8, x 12.0; the missing wedge smears Z)
    weight = np.clip(middle, 0, None)
    zz, xx = np.mgrid[0:Z, 0:X]
    assert (weight * zz).sum() / weight.sum() == pytest.approx(8, abs=0.5)
    assert (weight * xx).sum() / weight.sum() == pytest.approx(12, abs=0.5)

    binned = tmp_path / "tomo2.mrc"
    opts = ReconstructOptions(tmp_path / "ts.mrc", binned, Z // 2, bin=2, device="cpu")
    assert reconstruct(opts) == (Z // 2, Y // 2, X // 2)
    with mrcfile.open(binned) as m:
        assert float(m.voxel_size.x) == pytest.approx(6.0)


def test_reconstruct_refuses_before_any_work(tmp_path):
    path = _tilts(tmp_path, [-10.0, 0.0, 10.0])
    out = tmp_path / "tomo.mrc"
    with pytest.raises(InputError, match="tilt counts differ"):
        reconstruct(ReconstructOptions(path, out, Z, angles_deg=np.array([0.0, 5.0])))
    with pytest.raises(InputError, match="smaller than --bin 16"):
        reconstruct(ReconstructOptions(path, out, Z, bin=16))
    assert not out.exists()
