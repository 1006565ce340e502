"""faket_dask.stages.noise_apply: noise draws and applying a model, against numpy (spec §1.4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _noise_pairs import ANGLES, STATS, H, T, W, make_pairs, with_value

from faket_dask.errors import InputError
from faket_dask.stages.noise import fit_noise_model
from faket_dask.stages.noise_apply import NoiseDraw, apply_noise, noise_field, stream_key

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pairs():
    return make_pairs()


@pytest.fixture(scope="module")
def model(pairs):
    return fit_noise_model(pairs, ANGLES, provenance={"files": ["a.mrc", "b.mrc"]})


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
        apply_noise(torch.from_numpy(with_value(pairs[0][0], (2, 3, 3), np.nan)), model, ANGLES, 0)
    with pytest.raises(InputError, match="tilt 1 is constant"):
        apply_noise(torch.from_numpy(with_value(pairs[0][0], 1, 3.0)), model, ANGLES, 0)
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
