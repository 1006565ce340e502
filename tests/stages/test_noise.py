"""faket_dask.stages.noise: fitting, files and curves against direct numpy formulas (spec §1.3)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _noise_pairs import ANGLES, STATS, T, make_pairs, with_value

from faket_dask.errors import InputError
from faket_dask.stages.noise import NoiseModel, fit_noise_model, fit_noise_model_from_reference

pytestmark = pytest.mark.timeout(60)


def numpy_raw_curves(clean: np.ndarray, ref: np.ndarray) -> dict[str, np.ndarray]:
    c64, s64 = clean.astype(np.float64), ref.astype(np.float64)
    r = np.array([np.corrcoef(c64[t].ravel(), s64[t].ravel())[0, 1] for t in range(len(c64))])
    r = np.clip(r, 0.0, 1.0)
    return {
        "r": r,
        "sigma": np.sqrt(1 - r**2),
        "mean": s64.mean(axis=(1, 2)),
        "std": s64.std(axis=(1, 2)),
    }


def numpy_fit(curves: list[np.ndarray], degree: int, at: np.ndarray | None = None) -> np.ndarray:
    idx = np.arange(len(curves[0]))
    at = idx if at is None else at
    return np.mean([np.polyval(np.polyfit(idx, c, degree), at) for c in curves], axis=0)


@pytest.fixture(scope="module")
def pairs():
    return make_pairs()


@pytest.fixture(scope="module")
def model(pairs):
    return fit_noise_model(pairs, ANGLES, provenance={"files": ["a.mrc", "b.mrc"]})


# ------------------------------------------------------------------------------ fitting


def test_fit_matches_numpy_formulas(pairs, model):
    raw = [numpy_raw_curves(c, s) for c, s in pairs]
    assert model.degree == 2
    assert model.angles_deg == tuple(ANGLES)
    assert len(model.raw) == len(pairs)
    for s in STATS:
        for p in range(len(pairs)):
            np.testing.assert_allclose(model.raw[p].array(s), raw[p][s], rtol=1e-10, atol=1e-12)
        per_pair = [c[s] for c in raw]
        np.testing.assert_allclose(model.fit.array(s), numpy_fit(per_pair, 2), rtol=1e-9)
        np.testing.assert_allclose(model.baseline.array(s), numpy_fit(per_pair, 0), rtol=1e-9)
        # degree 0 collapses every curve to its mean: constant over tilts
        np.testing.assert_allclose(
            model.baseline.array(s), np.full(T, np.mean([c.mean() for c in per_pair])), rtol=1e-9
        )
    # the data was built so that r and std really depend on the tilt
    assert np.ptp(model.fit.array("std")) > 0.5
    assert np.ptp(model.fit.array("r")) > 0.05
    assert model.provenance["method"] == "paired"
    assert model.provenance["files"] == ["a.mrc", "b.mrc"]
    assert model.provenance["n_pairs"] == 3


def test_fit_accepts_torch_and_other_degrees(pairs, model):
    tpairs = [(torch.from_numpy(c), torch.from_numpy(s)) for c, s in pairs]
    m = fit_noise_model(tpairs, ANGLES)
    assert m.fit == model.fit and m.raw == model.raw
    m1 = fit_noise_model(pairs, ANGLES, degree=1)
    raw = [numpy_raw_curves(c, s) for c, s in pairs]
    np.testing.assert_allclose(m1.fit.array("mean"), numpy_fit([c["mean"] for c in raw], 1))
    assert len(m1.fit_coefficients.r) == 2


def test_closed_form_r_is_argmin_of_residual_std(pairs, model):
    clean, ref = pairs[1]
    grid = np.linspace(0.0, 1.0, 10001)
    for t in range(T):
        c = clean[t].astype(np.float64).ravel()
        s = ref[t].astype(np.float64).ravel()
        zc = (c - c.mean()) / c.std()
        zs = (s - s.mean()) / s.std()
        resid = np.std(zs[None, :] - grid[:, None] * zc[None, :], axis=1)
        best = grid[resid.argmin()]
        assert abs(model.raw[1].r[t] - best) <= 1e-4
        assert abs(model.raw[1].sigma[t] - resid.min()) <= 1e-6


def test_negative_correlation_clips_to_zero():
    clean = make_pairs(1)[0][0]
    m = fit_noise_model([(clean, -clean + 0.01 * clean**2)], ANGLES, degree=0)
    assert all(v == 0.0 for v in m.raw[0].r)
    assert all(v == 1.0 for v in m.raw[0].sigma)


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda c, s: [(c, s[:, :, :-1])], "pair 0: clean shape"),
        (lambda c, s: [(c, s), (c[:4], s[:4])], "pair 1 has 4 tilts but 5 angles"),
        (lambda c, s: [(c[:4], s[:4])], "pair 0 has 4 tilts"),
        (
            lambda c, s: [(c, with_value(s, (3, 2, 2), np.nan))],
            "pair 0 reference tilt 3 contains NaN",
        ),
        (lambda c, s: [(c, s), (with_value(c, (2, 0, 0), np.inf), s)], "pair 1 clean tilt 2 .*NaN"),
        (lambda c, s: [(with_value(c, 1, 7.0), s)], "pair 0 clean tilt 1 is constant"),
        (lambda c, s: [(c, with_value(s, 4, 0.0))], "pair 0 reference tilt 4 is constant"),
        (lambda c, s: [(c[0], s[0])], "must be a non-empty \\(T, H, W\\)"),
        (lambda c, s: [], "at least one"),
    ],
)
def test_fit_validation(pairs, bad, match):
    c, s = pairs[0]
    with pytest.raises(InputError, match=match):
        fit_noise_model(bad(c, s), ANGLES)


def test_fit_validation_angles_and_degree(pairs):
    with pytest.raises(InputError, match="degree"):
        fit_noise_model(pairs, ANGLES, degree=5)
    with pytest.raises(InputError, match="strictly increasing"):
        fit_noise_model(pairs, [0, 0, 1, 2, 3])
    with pytest.raises(InputError, match="strictly increasing"):
        fit_noise_model(pairs, ANGLES[::-1])
    with pytest.raises(InputError, match="NaN"):
        fit_noise_model(pairs, [0, np.nan, 1, 2, 3])


# ------------------------------------------------------------------------ reference-only


@pytest.mark.parametrize("snr", [0.0, 0.25, 3.0])
def test_reference_only_scalar_snr(pairs, snr):
    ref = pairs[0][1]
    m = fit_noise_model_from_reference(ref, ANGLES, snr, provenance={"files": ["r.mrc"]})
    np.testing.assert_allclose(m.fit.array("r"), np.sqrt(snr / (1 + snr)), atol=1e-12)
    np.testing.assert_allclose(m.fit.array("sigma"), np.sqrt(1 / (1 + snr)), atol=1e-12)
    np.testing.assert_allclose(m.fit.array("r") ** 2 + m.fit.array("sigma") ** 2, 1.0)
    raw = numpy_raw_curves(pairs[0][0], ref)
    for s in ("mean", "std"):
        np.testing.assert_allclose(m.fit.array(s), numpy_fit([raw[s]], 2), rtol=1e-9)
        np.testing.assert_allclose(m.baseline.array(s), raw[s].mean(), rtol=1e-9)
    assert m.provenance["method"] == "reference-only"
    assert m.provenance["snr"] == snr
    assert m.provenance["files"] == ["r.mrc"]


def test_reference_only_per_tilt_snr_and_validation(pairs):
    ref = torch.from_numpy(pairs[0][1])
    snr = np.array([0.5, 1.0, 2.0, 1.0, 0.5])
    m = fit_noise_model_from_reference(ref, ANGLES, snr, degree=4)  # degree T-1 interpolates
    np.testing.assert_allclose(m.raw[0].array("r"), np.sqrt(snr / (1 + snr)), atol=1e-12)
    np.testing.assert_allclose(m.fit.array("r"), np.sqrt(snr / (1 + snr)), atol=1e-9)
    assert m.provenance["snr"] == snr.tolist()
    with pytest.raises(InputError, match="snr"):
        fit_noise_model_from_reference(ref, ANGLES, [1.0, 2.0])
    with pytest.raises(InputError, match="snr"):
        fit_noise_model_from_reference(ref, ANGLES, -1.0)
    with pytest.raises(InputError, match="4 tilts but 5 angles"):
        fit_noise_model_from_reference(ref[:4], ANGLES, 1.0)


# ---------------------------------------------------------------------- save/load/curves


def test_save_load_round_trip(tmp_path, model):
    path = model.save(tmp_path / "noise.json")
    loaded = NoiseModel.load(path)
    assert loaded == model
    assert NoiseModel.load(tmp_path) == model  # a directory means <dir>/noise.json
    assert json.loads(path.read_text())["format"] == "faket-dask/noise-model/v1"
    for a, b in zip(loaded.curves(ANGLES), model.curves(ANGLES), strict=True):
        assert np.array_equal(a, b)


def test_load_errors_name_the_file(tmp_path, model):
    missing = tmp_path / "nope.json"
    with pytest.raises(InputError, match=r"nope\.json does not exist"):
        NoiseModel.load(missing)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(InputError, match=r"bad\.json is not valid JSON"):
        NoiseModel.load(bad_json)
    data = json.loads(model.model_dump_json())
    data["fit"]["r"] = data["fit"]["r"][:-1]
    short = tmp_path / "short.json"
    short.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"short\.json is invalid: .*same length"):
        NoiseModel.load(short)
    data = json.loads(model.model_dump_json())
    del data["baseline"]
    nobase = tmp_path / "nobase.json"
    nobase.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"nobase\.json is invalid: baseline"):
        NoiseModel.load(nobase)


def test_curves_at_fitted_angles_and_subsets(pairs, model):
    r, sigma, mean, std = model.curves(ANGLES)
    for s, v in zip(STATS, (r, sigma, mean, std), strict=True):
        assert np.array_equal(v, model.fit.array(s))
    subset = [40.0, -20.0, 0.0004]  # within 1e-3 deg counts as the fitted angle
    sub = model.curves(subset)
    for s, v in zip(STATS, sub, strict=True):
        assert np.array_equal(v, model.fit.array(s)[[4, 1, 2]])
    base = model.curves(subset, baseline=True)
    for s, v in zip(STATS, base, strict=True):
        assert np.array_equal(v, model.baseline.array(s)[[4, 1, 2]])


def test_curves_between_fitted_angles_evaluate_the_fit(pairs, model):
    raw = [numpy_raw_curves(c, s) for c, s in pairs]
    angles = np.array([-30.0, 5.0, 37.0])
    frac = np.interp(angles, ANGLES, np.arange(T))  # 0.5, 2.25, 3.85
    got = model.curves(angles)
    for s, v in zip(STATS, got, strict=True):
        expected = numpy_fit([c[s] for c in raw], 2, at=frac)
        np.testing.assert_allclose(v, expected, rtol=1e-9)
    base = model.curves(angles, baseline=True)
    np.testing.assert_allclose(base[3], model.baseline.std[0], rtol=1e-12)


def test_curves_out_of_range(model):
    with pytest.raises(InputError, match=r"outside the noise model's fitted range \[-40, 40\]"):
        model.curves([0.0, 42.0])
    with pytest.raises(InputError, match="outside"):
        model.curves([-40.01])
    np.testing.assert_allclose(model.tilt_indices([-40.0005, 30.0]), [0.0, 3.5])
