"""stages/calibration.py: defocus, SNR and tilt dependence recovered from the tilt-series alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _microscopes import ANGLES, MICROSCOPES, synth

from faket_dask.errors import InputError
from faket_dask.stages.calibration import Calibration, calibrate


@pytest.fixture(scope="module", params=sorted(MICROSCOPES))
def calibrated(request):
    name = request.param
    series, truth = synth(name, seed=11)
    # the calibration sees the tilts, their angles and the pixel spacing, nothing else
    order = np.random.default_rng(0).permutation(ANGLES.size)  # any stack order
    cal = calibrate(series.data[order], ANGLES[order], series.pixel_spacing)
    return name, cal, truth


def test_defocus_within_5_percent(calibrated):
    name, cal, _ = calibrated
    df = MICROSCOPES[name]["defocus_um"]
    assert cal.defocus_um == pytest.approx(df, rel=0.05)
    per_tilt = np.array([t.defocus_um for t in cal.tilts])
    assert np.median(per_tilt) == pytest.approx(df, rel=0.05)
    assert cal.ring_score > 0.3 and cal.n_zeros >= 2
    print(f"{name}: defocus {cal.defocus_um:.3f} um (truth {df}), ring score {cal.ring_score:.2f}")


def test_snr_within_20_percent_at_every_tilt(calibrated):
    name, cal, truth = calibrated
    np.testing.assert_allclose(cal.angles_deg, ANGLES)
    ratio = cal.snr / truth["snr"]
    print(f"{name}: SNR estimate / truth per tilt {np.round(ratio, 3)}")
    assert np.all(np.abs(ratio - 1) < 0.2)
    assert abs(np.median(ratio) - 1) < 0.1
    noise = np.array([t.noise_var for t in cal.tilts])
    np.testing.assert_allclose(noise, truth["noise_var"], rtol=0.2)


def test_tilt_dependence_gives_the_thickness_in_mean_free_paths(calibrated):
    name, cal, _ = calibrated
    p = MICROSCOPES[name]
    want = p["thickness_nm"] / 350.0  # synth's mean free path at 300 kV
    assert cal.tilt_dependence["thickness_mfp"] == pytest.approx(want, rel=0.1)
    # the dose per tilt falls with the path length: noise variance ∝ mean counts
    assert cal.tilt_dependence["log_noise_var"][1] < 0


def test_json_round_trip_and_bad_files(calibrated, tmp_path):
    _, cal, _ = calibrated
    path = cal.save(tmp_path / "micro.json")
    again = Calibration.load(path)
    assert again == cal
    data = json.loads(path.read_text())
    assert data["format"] == "faket-dask/calibration/v1"
    assert "defocus_um" in data["estimated"] and data["given"] == []
    with pytest.raises(InputError, match="does not exist"):
        Calibration.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"format": "faket-dask/calibration/v1"}')
    with pytest.raises(InputError, match="is not a calibration"):
        Calibration.load(tmp_path / "bad.json")


def test_bad_input_is_one_clear_error():
    with pytest.raises(InputError, match=r"\(T, H, W\)"):
        calibrate(np.zeros((64, 64)), [0.0], 5.0)
    with pytest.raises(InputError, match="angles"):
        calibrate(np.ones((2, 64, 64)), [0.0], 5.0)
    x = np.random.default_rng(0).normal(size=(2, 64, 64))
    with pytest.raises(InputError, match="pixel spacing"):
        calibrate(x, [0.0, 10.0], None)  # type: ignore[arg-type]
    x[1] = 3.0
    with pytest.raises(InputError, match="tilt 1 is constant"):
        calibrate(x, [0.0, 10.0], 5.0)
