"""ops/reference: style references from files (prepare, from a tomogram), synth, calibrate."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest

from faket_dask.errors import InputError
from faket_dask.io import Volume, write_mrc, write_volume
from faket_dask.ops.reference import (
    CalibrateOptions,
    PrepareOptions,
    calibrate,
    from_tomogram,
    prepare,
    synth,
)
from faket_dask.stages.reference import from_tomogram as stage_from_tomogram

pytestmark = pytest.mark.timeout(120)

MDOC = """PixelSpacing = 5.0

[ZValue = 0]
TiltAngle = -20.0

[ZValue = 1]
TiltAngle = 0.0

[ZValue = 2]
TiltAngle = 20.0
"""


def test_prepare_reads_a_sibling_mdoc_and_resamples(tmp_path):
    data = np.random.default_rng(1).normal(size=(3, 32, 40)).astype(np.float32)
    ref = tmp_path / "ts.mrc"
    write_mrc(ref, data, None, stack=True)  # no angles, no spacing: both from ts.mrc.mdoc
    (tmp_path / "ts.mrc.mdoc").write_text(MDOC)
    out = tmp_path / "prepared.mrc"
    series = prepare(PrepareOptions(ref, out, pixel_spacing=10.0, device="cpu"))
    assert series.data.shape == (3, 16, 20)  # 5 Å to 10 Å halves each side
    np.testing.assert_allclose(series.angles_deg, [-20.0, 0.0, 20.0])
    with mrcfile.open(out) as m:
        assert np.asarray(m.data).shape == (3, 16, 20)
        assert float(m.voxel_size.x) == pytest.approx(10.0)
    np.testing.assert_allclose(np.loadtxt(out.with_suffix(".tlt")), [-20.0, 0.0, 20.0])


def test_from_tomogram_writes_the_stages_projection_with_the_header_spacing(tmp_path):
    tomo = np.random.default_rng(2).random((8, 12, 16)).astype(np.float32)
    write_volume(tmp_path / "tomo.mrc", Volume(tomo, 6.0))
    angles = np.array([-30.0, 0.0, 30.0])
    out = tmp_path / "ref.mrc"
    series = from_tomogram(tmp_path / "tomo.mrc", out, angles, device="cpu")
    expected = stage_from_tomogram(tomo, angles, pixel_spacing=6.0)
    with mrcfile.open(out) as m:
        np.testing.assert_array_equal(np.asarray(m.data), expected.data)
        assert float(m.voxel_size.x) == pytest.approx(6.0)
    assert series.pixel_spacing == 6.0


def test_synth_writes_the_series_and_its_per_tilt_truth(tmp_path):
    out = tmp_path / "synth.mrc"
    angles = np.array([-40.0, 0.0, 40.0])
    sidecar = synth(out, (3, 32, 32), angles, {"pixel_spacing": 8.0, "seed": 5})
    record = json.loads(sidecar.read_text())
    assert sidecar == tmp_path / "synth.synth.json"
    assert record["stand_in"] is True and record["seed"] == 5 and record["pixel_spacing"] == 8.0
    assert record["shape"] == [3, 32, 32] and record["angles_deg"] == [-40.0, 0.0, 40.0]
    assert set(record["truth"]) == {"electrons_per_pixel", "noise_var", "signal_var", "snr"}
    truth = {k: np.array(v) for k, v in record["truth"].items()}
    np.testing.assert_allclose(truth["snr"], truth["signal_var"] / truth["noise_var"])
    # more tilt, a longer path through the specimen: fewer electrons at ±40° than at 0°
    assert truth["electrons_per_pixel"][1] > max(truth["electrons_per_pixel"][[0, 2]])
    with mrcfile.open(out) as m:
        assert np.asarray(m.data).shape == (3, 32, 32)
        assert float(m.voxel_size.x) == pytest.approx(8.0)


def test_calibrate_needs_angles(tmp_path):
    ref = tmp_path / "ts.mrc"
    write_mrc(ref, np.ones((2, 16, 16), np.float32), 5.0, stack=True)
    out = tmp_path / "cal.json"
    with pytest.raises(InputError, match="has no tilt angles; give --angles-file or --mdoc"):
        calibrate(CalibrateOptions(ref, out))
    assert not out.exists()
