"""Tests of faket_dask.stages.noise against direct numpy formulas (faket-spec.md §1.3, §1.4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from faket_dask.errors import InputError
from faket_dask.stages.noise import (
    NoiseDraw,
    NoiseModel,
    apply_noise,
    fit_noise_model,
    fit_noise_model_from_reference,
    noise_field,
    stream_key,
)

pytestmark = pytest.mark.timeout(60)

T, H, W = 5, 16, 20
ANGLES = np.array([-40.0, -20.0, 0.0, 20.0, 40.0])
STATS = ("r", "sigma", "mean", "std")


def make_pairs(n_pairs: int = 3, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Clean stacks with structure, and references = tilt-dependent mix of clean and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    pairs = []
    for p in range(n_pairs):
        clean = np.empty((T, H, W))
        ref = np.empty((T, H, W))
        for t in range(T):
            blob = np.exp(-((yy - 5 - t) ** 2 + (xx - 8 - p) ** 2) / 12.0)
            clean[t] = -blob + 0.1 * rng.normal(size=(H, W))
            a = 0.9 - 0.1 * abs(t - 2) + 0.02 * p  # correlation falls off with |tilt|
            ref[t] = (
                5.0
                + 0.3 * t
                + (1.0 + 0.2 * t**2)
                * (a * clean[t] / clean[t].std() + 0.6 * rng.normal(size=(H, W)))
            )
        pairs.append((clean.astype(np.float32), ref.astype(np.float32)))
    return pairs


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
        (lambda c, s: [(c, _set(s, (3, 2, 2), np.nan))], "pair 0 reference tilt 3 contains NaN"),
        (lambda c, s: [(c, s), (_set(c, (2, 0, 0), np.inf), s)], "pair 1 clean tilt 2 .*NaN"),
        (lambda c, s: [(_set(c, 1, 7.0), s)], "pair 0 clean tilt 1 is constant"),
        (lambda c, s: [(c, _set(s, 4, 0.0))], "pair 0 reference tilt 4 is constant"),
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


def _set(a: np.ndarray, where, value) -> np.ndarray:
    a = a.copy()
    a[where] = value
    return a


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


# --------------------------------------------------------------------------- noise draws


def test_faket_rng_equals_one_flat_draw():
    seed = 7
    flat = np.random.default_rng([99, seed]).normal(size=T * H * W).reshape(T, H, W)
    per_tilt = torch.stack(
        [noise_field((H, W), seed, 99, t, generator_kind="faket") for t in range(T)]
    )
    assert per_tilt.dtype == torch.float64
    assert np.array_equal(per_tilt.numpy(), flat)


def test_faket_rng_draws_per_sample_as_the_reference_per_tomogram():
    """Sample N of a seed-0 dataset draws the reference's default_rng(N); samples differ."""
    for n in (0, 3):
        reference = np.random.default_rng(n).normal(size=(H, W))  # the reference's tomogram N
        assert np.array_equal(noise_field((H, W), 0, n, 0, generator_kind="faket"), reference)
    a = noise_field((H, W), 5, 1, 0, generator_kind="faket").numpy()
    b = noise_field((H, W), 5, 2, 0, generator_kind="faket").numpy()
    c = noise_field((H, W), 6, 1, 0, generator_kind="faket").numpy()
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.2  # independent draws
    assert abs(np.corrcoef(a.ravel(), c.ravel())[0, 1]) < 0.2


def test_keyed_stream_is_keyed_and_order_independent():
    a = noise_field((H, W), 3, 11, 2, "cpu")
    assert a.dtype == torch.float32 and a.shape == (H, W)
    assert a.numpy().tobytes() == noise_field((H, W), 3, 11, 2, "cpu").numpy().tobytes()
    for other in [(4, 11, 2), (3, 12, 2), (3, 11, 3)]:
        assert not torch.equal(a, noise_field((H, W), *other, "cpu"))
    assert not torch.equal(a, noise_field((H, W), 3, 11, 2, "cpu", stream="other"))
    forward = [noise_field((H, W), 3, 11, t) for t in range(T)]
    torch.manual_seed(123)  # the global RNG plays no part
    backward = [noise_field((H, W), 3, 11, t) for t in reversed(range(T))][::-1]
    for f, b in zip(forward, backward, strict=True):
        assert f.numpy().tobytes() == b.numpy().tobytes()
    assert 0 <= stream_key(3, 11, 2) < 2**63
    assert stream_key(3, 11, 2) != stream_key(3, 11, 2, "other")
    with pytest.raises(InputError, match="integers"):
        stream_key(1.5, 0, 0)


# ------------------------------------------------------------------------------ applying


def numpy_apply(noiseless, eps, curves_by_mod):
    """The reference's recipe in float64 numpy, written out independently."""
    out = {}
    for m, (r, sigma, mean, std) in curves_by_mod.items():
        x = np.empty(noiseless.shape)
        for t in range(len(noiseless)):
            p = noiseless[t].astype(np.float64)
            y = (p - p.mean()) / p.std() * r[t]
            y = y + eps[t] * sigma[t]
            y = y / y.std() * std[t]
            x[t] = y - y.mean() + mean[t]
        out[m] = x
    return out


def expected_curves(model, factor=0.25):
    r, sigma, mean, std = (model.fit.array(s) for s in STATS)
    return {
        "noisy": (r, sigma, mean, std),
        "content": (r, sigma * factor, mean, std),
        "baseline": tuple(model.baseline.array(s) for s in STATS),
    }


@pytest.mark.parametrize("rng", ["faket", "keyed"])
def test_apply_noise_matches_numpy_recipe(pairs, model, rng):
    noiseless = pairs[0][0]
    seed = 5
    if rng == "faket":
        eps = np.random.default_rng([2, seed]).normal(size=T * H * W).reshape(T, H, W)
        tol = 1e-5
    else:
        eps = np.stack([noise_field((H, W), seed, 2, t).numpy() for t in range(T)])
        tol = 1e-4  # the keyed path computes in float32
    opts = NoiseDraw(rng=rng)
    out = apply_noise(torch.from_numpy(noiseless), model, ANGLES, seed, sample_id=2, options=opts)
    assert list(out) == ["noisy", "content", "baseline"]
    expected = numpy_apply(noiseless, eps.astype(np.float64), expected_curves(model))
    for m, v in out.items():
        assert v.dtype == torch.float32 and v.shape == (T, H, W)
        np.testing.assert_allclose(v.numpy(), expected[m], rtol=tol, atol=tol)


def test_apply_noise_statistics(pairs, model):
    out = apply_noise(torch.from_numpy(pairs[1][0]), model, ANGLES, seed=1, sample_id=4)
    curves = expected_curves(model)
    for m, v in out.items():
        x = v.numpy().astype(np.float64)
        _, _, mean, std = curves[m]
        np.testing.assert_allclose(x.mean(axis=(1, 2)), mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(x.std(axis=(1, 2)), std, rtol=1e-5, atol=1e-5)
    # BASELINE's statistics are constant over tilts
    b = out["baseline"].numpy().astype(np.float64)
    np.testing.assert_allclose(b.std(axis=(1, 2)), b.std(axis=(1, 2))[0], rtol=1e-5)
    np.testing.assert_allclose(b.mean(axis=(1, 2)), b.mean(axis=(1, 2))[0], rtol=1e-5)


@pytest.mark.parametrize("rng", ["faket", "keyed"])
def test_content_shares_the_noisy_draw(pairs, model, rng):
    noiseless = torch.from_numpy(pairs[2][0])
    opts = NoiseDraw(rng=rng, content_factor=1.0)
    same = apply_noise(noiseless, model, ANGLES, 9, options=opts)
    assert torch.equal(same["content"], same["noisy"])
    # reconstruct the pre-match fields: x = z*r + eps*s is an affine image of the output,
    # so standardise(output) * std(x) - z*r recovers eps*s; CONTENT's is 0.25x NOISY's.
    opts = NoiseDraw(rng=rng, modalities=("content", "noisy"))
    out = apply_noise(noiseless, model, ANGLES, 9, options=opts)
    assert list(out) == ["content", "noisy"]
    p = noiseless.numpy().astype(np.float64)
    z = (p - p.mean(axis=(1, 2), keepdims=True)) / p.std(axis=(1, 2), keepdims=True)
    r = model.fit.array("r")[:, None, None]
    sigma = model.fit.array("sigma")[:, None, None]
    if rng == "faket":
        eps = np.random.default_rng([0, 9]).normal(size=T * H * W).reshape(T, H, W)
    else:
        eps = np.stack([noise_field((H, W), 9, 0, t).numpy() for t in range(T)])
    noise = {}
    for m, factor in (("noisy", 1.0), ("content", 0.25)):
        o = out[m].numpy().astype(np.float64)
        so = (o - o.mean(axis=(1, 2), keepdims=True)) / o.std(axis=(1, 2), keepdims=True)
        pre_std = (z * r + eps * sigma * factor).std(axis=(1, 2), keepdims=True)
        noise[m] = so * pre_std - z * r
    np.testing.assert_allclose(noise["content"], 0.25 * noise["noisy"], atol=2e-5)
    field = eps * sigma  # the recovered field is the pre-match one less its per-tilt mean
    np.testing.assert_allclose(
        noise["noisy"], field - field.mean(axis=(1, 2), keepdims=True), atol=2e-5
    )


def test_apply_noise_is_deterministic_and_seeded(pairs, model):
    x = torch.from_numpy(pairs[0][0])
    noisy = NoiseDraw(modalities=("noisy",))
    a = apply_noise(x, model, ANGLES, 1, sample_id=3, options=noisy)["noisy"]
    b = apply_noise(x, model, ANGLES, 1, sample_id=3, options=noisy)["noisy"]
    assert a.numpy().tobytes() == b.numpy().tobytes()
    assert not torch.equal(a, apply_noise(x, model, ANGLES, 1, sample_id=4)["noisy"])
    assert not torch.equal(a, apply_noise(x, model, ANGLES, 2, sample_id=3)["noisy"])
    faket = NoiseDraw(rng="faket")
    f = apply_noise(x, model, ANGLES, 1, sample_id=3, options=faket)["noisy"]
    assert (
        f.numpy().tobytes()
        == apply_noise(x, model, ANGLES, 1, sample_id=3, options=faket)["noisy"].numpy().tobytes()
    )
    assert not torch.equal(f, apply_noise(x, model, ANGLES, 1, sample_id=4, options=faket)["noisy"])


def test_apply_noise_between_fitted_angles(pairs, model):
    angles = np.array([-30.0, -10.0, 10.0, 30.0])
    noisy = NoiseDraw(modalities=("noisy",))
    out = apply_noise(torch.from_numpy(pairs[0][0][:4]), model, angles, 0, options=noisy)
    std = out["noisy"].numpy().astype(np.float64).std(axis=(1, 2))
    np.testing.assert_allclose(std, model.curves(angles)[3], rtol=1e-5)


def test_apply_noise_validation(pairs, model):
    x = torch.from_numpy(pairs[0][0])
    with pytest.raises(InputError, match=r"\(T, H, W\)"):
        apply_noise(x[0], model, ANGLES, 0)
    with pytest.raises(InputError, match="tilt 2 contains NaN"):
        apply_noise(torch.from_numpy(_set(pairs[0][0], (2, 3, 3), np.nan)), model, ANGLES, 0)
    with pytest.raises(InputError, match="tilt 1 is constant"):
        apply_noise(torch.from_numpy(_set(pairs[0][0], 1, 3.0)), model, ANGLES, 0)
    with pytest.raises(InputError, match="4 angles"):
        apply_noise(x, model, ANGLES[:4], 0)
    with pytest.raises(InputError, match="outside"):
        apply_noise(x, model, ANGLES * 2, 0)
    with pytest.raises(InputError, match="modalities"):
        apply_noise(x, model, ANGLES, 0, options=NoiseDraw(modalities=("styled",)))
    with pytest.raises(InputError, match="rng"):
        apply_noise(x, model, ANGLES, 0, options=NoiseDraw(rng="numpy"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_noise_and_apply(pairs, model):
    a = noise_field((H, W), 3, 1, 2, "cuda")
    assert a.device.type == "cuda"
    assert torch.equal(a, noise_field((H, W), 3, 1, 2, "cuda"))
    x = torch.from_numpy(pairs[0][0])
    cpu = apply_noise(x, model, ANGLES, 5, options=NoiseDraw(rng="faket"))
    gpu = apply_noise(x.cuda(), model, ANGLES, 5, options=NoiseDraw(rng="faket"))
    for m in cpu:
        assert gpu[m].device.type == "cuda"
        np.testing.assert_allclose(gpu[m].cpu().numpy(), cpu[m].numpy(), rtol=1e-6, atol=1e-6)
    keyed = apply_noise(x.cuda(), model, ANGLES, 5)
    for m, v in keyed.items():
        _, _, mean, std = expected_curves(model)[m]
        got = v.double().cpu().numpy()
        np.testing.assert_allclose(got.std(axis=(1, 2)), std, rtol=1e-5)
        np.testing.assert_allclose(got.mean(axis=(1, 2)), mean, rtol=1e-5, atol=1e-5)
