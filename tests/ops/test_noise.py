"""ops/noise: fit a noise model from files, apply it to a file, against closed forms."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest
from _noise_pairs import ANGLES, make_pairs

from faket_dask.errors import InputError
from faket_dask.io import TiltSeries, write_tilt_series
from faket_dask.ops.noise import apply, fit_from_pairs, fit_from_reference
from faket_dask.options import NoiseOptions

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def files(tmp_path):
    clean, ref = make_pairs(1)[0]
    write_tilt_series(tmp_path / "clean.mrc", TiltSeries(clean, ANGLES, 10.0))
    write_tilt_series(tmp_path / "ref.mrc", TiltSeries(ref, ANGLES, 10.0))
    return tmp_path / "clean.mrc", tmp_path / "ref.mrc", ref


def test_fit_from_reference_measures_the_tilts_and_takes_r_from_the_snr(files, tmp_path):
    _, ref_path, ref = files
    model = fit_from_reference(ref_path, tmp_path / "m.json", 0.5, degree=1)
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["angles_deg"] == list(ANGLES) and saved["degree"] == 1
    raw = model.raw[0]
    # angles from the sibling .tlt; r and sigma from SNR = r² / (1 - r²)
    np.testing.assert_allclose(raw.r, np.sqrt(0.5 / 1.5))
    np.testing.assert_allclose(raw.sigma, np.sqrt(1 / 1.5))
    np.testing.assert_allclose(raw.mean, ref.astype(np.float64).mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(raw.std, ref.astype(np.float64).std(axis=(1, 2)), rtol=1e-6)


def test_fit_from_identical_pairs_is_noiseless(files, tmp_path):
    clean_path, _, _ = files
    model = fit_from_pairs([clean_path], [clean_path], tmp_path / "m.json")
    np.testing.assert_allclose(model.fit.r, 1.0, atol=1e-6)
    np.testing.assert_allclose(model.fit.sigma, 0.0, atol=1e-3)
    assert model.provenance["clean"] == [str(clean_path)]


def test_apply_matches_the_models_moments_per_tilt(files, tmp_path):
    clean_path, ref_path, _ = files
    model = fit_from_reference(ref_path, tmp_path / "m.json", 0.5)
    outputs = {"noisy": tmp_path / "noisy.mrc", "baseline": tmp_path / "base.mrc"}
    opts = NoiseOptions(clean_path, tmp_path / "m.json", outputs, seed=3, device="cpu")
    assert apply(opts) == outputs
    for name, baseline in (("noisy", False), ("baseline", True)):
        with mrcfile.open(outputs[name]) as m:
            out = np.asarray(m.data, dtype=np.float64)
        _, _, mean, std = model.curves(ANGLES, baseline=baseline)
        # match_mean_std: each output tilt has exactly the model's mean and std at its angle
        np.testing.assert_allclose(out.mean(axis=(1, 2)), mean, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(out.std(axis=(1, 2)), std, rtol=1e-4)
        np.testing.assert_allclose(np.loadtxt(outputs[name].with_suffix(".tlt")), ANGLES)


def test_apply_refuses_a_wrong_angle_count_before_any_work(files, tmp_path):
    clean_path, ref_path, _ = files
    fit_from_reference(ref_path, tmp_path / "m.json", 0.5)
    out = tmp_path / "noisy.mrc"
    opts = NoiseOptions(
        clean_path, tmp_path / "m.json", {"noisy": out}, angles_deg=ANGLES[:3], device="cpu"
    )
    with pytest.raises(InputError, match="tilt counts differ"):
        apply(opts)
    assert not out.exists()
