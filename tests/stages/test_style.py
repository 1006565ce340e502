"""Tests of faket_dask.stages.style against independent write-ups of FakET's step (spec §1.5).

Two independent references, both per tilt (batch 1) as the reference CLI runs:

* the closed form: the loss written out here, its autograd gradient at x0, then
  ``x1 = clamp(x0 - 0.15 g / (|g| + 1e-8))``, the EMA blend and the channel mean;
* the reference's own mechanics: ``torch.optim.Adam([img], lr=0.15)``, one step, a clamp, a
  bias-corrected EMA object (decay 0.99) and the channel mean.

Both run the network the reference's way (normalise, then torchvision's modules), which is
bit-identical to VGG19Features' forward, so the only differences left are the arithmetic of
the losses and of the update.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from faket_dask.errors import InputError
from faket_dask.stages import style as S
from faket_dask.stages.style import losses, transfer
from faket_dask.stages.style.tiled import loss_gradient_tiled
from faket_dask.stages.style.vgg import IMAGENET_MEAN, IMAGENET_STD, VGG19Features

pytestmark = pytest.mark.timeout(120)

STYLE = (1, 6, 11, 20, 29)
WEIGHTS = [w / 341 for w in (256, 64, 16, 4, 1)]


@pytest.fixture(scope="module")
def model() -> VGG19Features:
    return VGG19Features(seed=0).eval().requires_grad_(False)


def make_stacks(t: int = 4, h: int = 32, w: int = 48, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.avg_pool2d(torch.randn(t, 1, h + 2, w + 2, generator=g), 3, 1)[:, 0]
    content = base + 0.25 * torch.randn(t, h, w, generator=g)
    init = base + torch.randn(t, h, w, generator=g)
    style = 3.0 * torch.randn(t, h, w, generator=g) + 10.0
    return content, style, init


# ----------------------------------------------------------------- independent references


def ref_normalize(x):
    return (x - x.min()) / (x.max() - x.min())


def ref_features(model, img, layers):
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    h = (img - mean) / std
    out = {}
    for i in range(max(layers) + 1):
        h = model.features[i](h)
        if i in layers:
            out[i] = h
    return out


def ref_gram(f):
    mat = f.flatten(-2)
    return mat @ mat.transpose(-2, -1) / mat.shape[-1]


def ref_scaled_mse(a, b):
    diff = a - b
    return diff.pow(2).sum() / diff.abs().sum().add(1e-8)


def ref_loss(model, img, content_target, style_targets):
    feats = ref_features(model, img, (1, 6, 8, 11, 20, 29))
    loss = 1.0 * ref_scaled_mse(feats[8], content_target)
    for w, layer in zip(WEIGHTS, STYLE, strict=True):
        loss = loss + w * ref_scaled_mse(ref_gram(feats[layer]), style_targets[layer])
    return loss


def ref_targets(model, content_tilt, style_tilt):
    with torch.no_grad():
        c3 = content_tilt[None, None].expand(1, 3, -1, -1)
        s3 = style_tilt[None, None].expand(1, 3, -1, -1)
        content_target = ref_features(model, c3, (8,))[8]
        style_targets = {k: ref_gram(v) for k, v in ref_features(model, s3, STYLE).items()}
    return content_target, style_targets


def ref_match(x, style):
    """Per tilt: x / std * std_style, then - mean + mean_style (float64 statistics)."""
    out = []
    for xt, st in zip(x, style, strict=True):
        y = xt / xt.std(correction=0) * float(st.double().std(correction=0))
        out.append(y - y.mean() + float(st.double().mean()))
    return torch.stack(out)


def closed_form(model, content, style, init):
    """Normalised and matched outputs from the closed form of one Adam step plus the EMA."""
    cn, sn, xn = ref_normalize(content), ref_normalize(style), ref_normalize(init)
    d = 0.99
    w0, w1 = d * (1 - d) / (d * (1 - d) + (1 - d)), (1 - d) / (d * (1 - d) + (1 - d))
    outs = []
    for t in range(content.shape[0]):
        ct, st = ref_targets(model, cn[t], sn[t])
        x0 = xn[t][None, None].expand(1, 3, -1, -1).clone().requires_grad_(True)
        (g,) = torch.autograd.grad(ref_loss(model, x0, ct, st), x0)
        x0 = x0.detach()
        x1 = torch.clamp(x0 - 0.15 * g / (g.abs() + 1e-8), 0, 1)
        outs.append(torch.clamp(w0 * x0 + w1 * x1, 0, 1).mean(dim=1)[0])
    out = torch.stack(outs)
    return out, ref_match(out, style)


class EMA:
    """Bias-corrected EMA of iterates, as the reference's (decay 0.99)."""

    def __init__(self, x, decay):
        self.decay = decay
        self.accum = (1 - decay) * x.detach().clone()
        self.weight = 1 - decay

    def update(self, x):
        self.accum = self.decay * self.accum + (1 - self.decay) * x.detach()
        self.weight = self.decay * self.weight + (1 - self.decay)

    def get(self):
        return self.accum / self.weight  # (1-d)*d + (1-d) after one update


def adam_loop(model, content, style, init):
    cn, sn, xn = ref_normalize(content), ref_normalize(style), ref_normalize(init)
    outs = []
    for t in range(content.shape[0]):
        ct, st = ref_targets(model, cn[t], sn[t])
        img = xn[t][None, None].expand(1, 3, -1, -1).clone().requires_grad_(True)
        opt = torch.optim.Adam([img], lr=0.15)
        ema = EMA(img, 0.99)
        opt.zero_grad()
        ref_loss(model, img, ct, st).backward()
        opt.step()
        with torch.no_grad():
            img.clamp_(0, 1)
        ema.update(img)
        outs.append(ema.get().clamp(0, 1).mean(dim=1)[0])
    return ref_match(torch.stack(outs), style)


def assert_close_in_std(got, want, rel, what):
    err = float((got - want).abs().max() / want.std())
    print(f"{what}: max |diff| = {err:.2e} x output std")
    assert err <= rel, (what, err)


# ----------------------------------------------------------------- the step itself


def test_constants_are_derived():
    w0, w1 = S.ema_weights(0.99)
    assert w0 == pytest.approx(0.99 / 1.99, abs=1e-15) and w1 == pytest.approx(1 / 1.99, abs=1e-15)
    assert (round(w0, 6), round(w1, 6)) == (0.497487, 0.502513)
    assert [round(w, 5) for w in S.STYLE_LAYER_WEIGHTS] == [
        0.75073,
        0.18768,
        0.04692,
        0.01173,
        0.00293,
    ]
    assert sum(S.STYLE_LAYER_WEIGHTS) == pytest.approx(1.0)


def test_gram_and_scaled_mse_formulas():
    f = torch.randn(2, 5, 4, 6, generator=torch.Generator().manual_seed(0))
    want = torch.einsum("bchw,bdhw->bcd", f, f) / 24
    assert torch.allclose(S.gram(f), want, rtol=1e-6, atol=1e-6)
    assert S.gram(f.bfloat16()).dtype == torch.float32
    a, b = torch.randn(3, 7), torch.randn(3, 7)
    assert float(S.scaled_mse(a, b)) == pytest.approx(
        float(((a - b) ** 2).sum() / ((a - b).abs().sum() + 1e-8)), rel=1e-6
    )


def test_minmax_and_normalize():
    x = torch.tensor([[[-2.0, 0.0], [1.0, 6.0]]])
    assert S.minmax(x) == (-2.0, 6.0)
    assert S.minmax(x.numpy()) == (-2.0, 6.0)
    assert torch.equal(S.normalize(x, -2.0, 6.0), ref_normalize(x))


def test_style_step_equals_closed_form(model):
    content, style, init = make_stacks()  # 32 x 48: non-square
    want_norm, _ = closed_form(model, content, style, init)
    cn, sn, xn = (S.normalize(x, *S.minmax(x)) for x in (content, style, init))
    got = S.style_step(cn, xn, S.style_grams(model, sn), model)
    assert got.shape == (4, 32, 48) and got.dtype == torch.float32
    assert_close_in_std(got, want_norm, 1e-5, "style_step vs closed form")


def test_style_transfer_equals_closed_form_and_adam_loop(model):
    content, style, init = make_stacks(t=3, h=32, w=32, seed=2)
    _, want = closed_form(model, content, style, init)
    got = S.style_transfer(content, style, init, model, S.StyleRun(batch_size=4))
    assert_close_in_std(got, want, 1e-5, "style_transfer vs closed form")
    adam = adam_loop(model, content, style, init)
    assert_close_in_std(got, adam, 1e-5, "style_transfer vs Adam + EMA loop")


def test_non_square_tilts_and_a_style_of_another_size(model):
    content, style, init = make_stacks(t=3, h=32, w=48, seed=3)
    got = S.style_transfer(content, style, init, model)
    assert got.shape == (3, 32, 48)
    assert_close_in_std(got, adam_loop(model, content, style, init), 1e-5, "32x48 vs Adam loop")
    other = 3.0 * torch.randn(3, 40, 24, generator=torch.Generator().manual_seed(9)) + 1.0
    got2 = S.style_transfer(content, other, init, model)
    assert got2.shape == (3, 32, 48)
    assert_close_in_std(got2, adam_loop(model, content, other, init), 1e-5, "40x24 style")


def test_output_has_the_raw_style_tilts_mean_and_std(model):
    content, style, init = make_stacks()
    style = style * torch.tensor([1.0, 2.0, 0.5, 3.0]).view(4, 1, 1) + torch.arange(4.0).view(
        4, 1, 1
    )
    out = S.style_transfer(content, style, init, model).double()
    s = style.double()
    assert torch.allclose(out.mean(dim=(1, 2)), s.mean(dim=(1, 2)), rtol=1e-6, atol=1e-6)
    assert torch.allclose(
        out.std(dim=(1, 2), correction=0), s.std(dim=(1, 2), correction=0), rtol=1e-5
    )


def test_batch_size_does_not_change_the_bytes_on_cpu(model):
    content, style, init = make_stacks()
    one = S.style_transfer(content, style, init, model, S.StyleRun(batch_size=1))
    three = S.style_transfer(content, style, init, model, S.StyleRun(batch_size=3))
    four = S.style_transfer(content, style, init, model, S.StyleRun(batch_size=4))
    diff = float((four - one).abs().max() / one.std())
    print(
        f"batch 4 vs batch 1 on CPU: bitwise equal = {torch.equal(four, one)}, max {diff:.1e} std"
    )
    assert diff <= 1e-6
    assert torch.equal(four, one) and torch.equal(three, one)  # one tilt per pass on the CPU
    sn = S.normalize(style, *S.minmax(style))
    batched = S.style_grams(model, sn)
    for t in range(4):
        single = S.style_grams(model, sn[t : t + 1])
        for a, b in zip(batched, single, strict=True):
            assert torch.equal(a[t], b[0])


def test_ranges_given_explicitly_and_split_stacks(model):
    content, style, init = make_stacks()
    full = S.style_transfer(content, style, init, model)
    ranges = {"content": S.minmax(content), "style": S.minmax(style), "init": S.minmax(init)}
    assert torch.equal(S.style_transfer(content, style, init, model, ranges=ranges), full)
    # A distributed caller styles tilts 0-1 and 2-3 separately with the whole stacks' ranges.
    parts = [
        S.style_transfer(content[sl], style[sl], init[sl], model, ranges=ranges)
        for sl in (slice(0, 2), slice(2, 4))
    ]
    assert torch.equal(torch.cat(parts), full)
    # Without the global ranges the halves would be normalised differently.
    alone = S.style_transfer(content[:2], style[:2], init[:2], model)
    assert not torch.equal(alone, full[:2])
    narrow = dict(ranges, init=(float(init.min()) + 0.1, float(init.max())))
    with pytest.raises(InputError, match="outside the given range"):
        S.style_transfer(content, style, init, model, ranges=narrow)
    with pytest.raises(InputError, match="no style"):
        S.style_transfer(content, style, init, model, ranges={"content": ranges["content"]})
    with pytest.raises(InputError, match="min < max"):
        S.style_transfer(content, style, init, model, ranges=dict(ranges, style=(1.0, 1.0)))


def test_oom_back_off_gives_identical_bytes(model, monkeypatch, caplog):
    content, style, init = make_stacks()
    clean = S.style_transfer(content, style, init, model, S.StyleRun(batch_size=4))
    monkeypatch.setenv(S.ENV_FAULT_OOM, "1")  # every batch of more than one tilt fails
    with caplog.at_level(logging.WARNING, logger="faket_dask.stages.style"):
        faulted = S.style_transfer(content, style, init, model, S.StyleRun(batch_size=4))
    assert torch.equal(faulted, clean)
    messages = [r.getMessage() for r in caplog.records]
    assert "out of memory on a batch of 4 tilts; retrying in batches of 2" in messages
    assert "out of memory on a batch of 2 tilts; retrying in batches of 1" in messages
    monkeypatch.setenv(S.ENV_FAULT_OOM, "0")  # even one tilt fails: the error comes out
    with pytest.raises(torch.OutOfMemoryError, match="injected"):
        S.style_transfer(content, style, init, model, S.StyleRun(batch_size=4))


def test_gram_cache_reuses_style_tilts(model):
    content, style, init = make_stacks()
    plain = S.style_transfer(content, style, init, model)
    cache = S.GramCache()
    first = S.style_transfer(content, style, init, model, gram_cache=cache)
    assert (cache.hits, cache.misses, len(cache)) == (0, 4, 4)
    second = S.style_transfer(content, style, init + 0.5 * init.flip(-1), model, gram_cache=cache)
    assert (cache.hits, cache.misses) == (4, 4)
    assert torch.equal(first, plain)
    assert torch.equal(second, S.style_transfer(content, style, init + 0.5 * init.flip(-1), model))
    bf16 = S.StyleRun(precision="bf16")
    S.style_transfer(content, style, init, model, bf16, gram_cache=cache)
    assert cache.misses == 8  # other precision, other entries
    S.style_transfer(content, style, init, model, gram_cache=cache, style_key="model_1")
    S.style_transfer(content, style, init, model, gram_cache=cache, style_key="model_1")
    assert (cache.hits, cache.misses) == (8, 12)
    # Without a key, tilts are identified by their bytes: a part of the stack hits too.
    ranges = {"content": S.minmax(content), "style": S.minmax(style), "init": S.minmax(init)}
    part = S.style_transfer(
        content[2:], style[2:], init[2:], model, ranges=ranges, gram_cache=cache
    )
    assert (cache.hits, cache.misses) == (10, 12)
    assert torch.equal(part, first[2:])
    small = S.GramCache(max_bytes=2 * cache.nbytes // len(cache))
    S.style_transfer(content, style, init, model, gram_cache=small)
    assert len(small) == 2 and small.nbytes <= small.max_bytes


def test_precisions(model):
    content, style, init = make_stacks()
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    fp32 = S.style_transfer(content, style, init, model, S.StyleRun(precision="fp32"))
    tf32 = S.style_transfer(content, style, init, model, S.StyleRun(precision="tf32"))
    assert torch.equal(tf32, fp32)  # no TF32 on a CPU
    bf16 = S.style_transfer(content, style, init, model, S.StyleRun(precision="bf16"))
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    frac = float((bf16 - fp32).abs().mean() / fp32.std())
    print(f"bf16 vs fp32: mean |diff| = {frac:.3f} x output std")
    assert 0 < frac < 0.2
    with pytest.raises(InputError, match="precision must be one of"):
        S.style_transfer(content, style, init, model, S.StyleRun(precision="fp16"))


def test_runs_under_inference_mode_and_on_numpy_input(model):
    content, style, init = make_stacks(t=2)
    want = S.style_transfer(content, style, init, model)
    with torch.inference_mode():
        got = S.style_transfer(content, style, init, model)
    assert torch.equal(got, want)
    got_np = S.style_transfer(
        content.numpy(), style.numpy(), init.numpy().astype(np.float64), model
    )
    assert torch.equal(got_np, want)


def test_input_validation(model):
    content, style, init = make_stacks(t=3)
    bad_nan = init.clone()
    bad_nan[1, 2, 3] = float("nan")
    flat = style.clone()
    flat[2] = 4.0
    cases = [
        ((content[0], style, init), "content must be a \\(T, H, W\\) stack"),
        ((content, style[:2], init), "same number of tilts"),
        ((content, style, init[:, :, :40]), "must have one shape"),
        ((content, style, bad_nan), "init holds NaN or infinite values"),
        ((content, flat, init), "style tilt 2 is constant"),
        ((content[:, :15], style, init[:, :15]), "at least 16x16"),
        ((content, style[:, :, :12], init), "style tilts are 32x12"),
        ((content, style, "x"), "init must be a \\(T, H, W\\)"),
    ]
    for args, msg in cases:
        with pytest.raises(InputError, match=msg) as err:
            S.style_transfer(*args, model)
        assert "\n" not in str(err.value)
    for bs in (0, -1, 2.0, True):
        with pytest.raises(InputError, match="batch_size"):
            S.style_transfer(content, style, init, model, S.StyleRun(batch_size=bs))


# ----------------------------------------------------------------- memory model and fast paths


def test_layer_geometry_against_a_delta_image(model):
    """Each layer's (stride, margin): where one bright pixel shows up in a positive network."""
    pos = VGG19Features(seed=0).eval().requires_grad_(False)
    with torch.no_grad():
        for m in pos.features:
            if isinstance(m, torch.nn.Conv2d):
                m.weight.abs_()  # positive weights, zero biases: nothing is lost to ReLU/pool
    h, w, row = 256, 32, 100
    img = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(1, 3, h, w).clone()
    img[:, :, row, 16] += 1.0  # normalises to 0 everywhere but this pixel
    layers = (1, 6, 8, 11, 20, 29)
    feats = pos(img, layers)
    geo = S.layer_geometry()
    for layer in layers:
        rows = feats[layer].abs().sum(dim=(0, 1, 3)).nonzero().flatten()
        stride, margin, channels = geo[layer]
        assert feats[layer].shape[1] == channels
        # position q sees input rows [s q - m, s q + s - 1 + m]
        first = -(-(row - stride + 1 - margin) // stride)
        last = (row + margin) // stride
        assert (int(rows.min()), int(rows.max())) == (first, last), layer
    assert S.receptive_margin() == 70 and S.default_halo() == 80  # relu5_1: a 156 px field
    spans = S.tile_spans(100, 32, 16)
    assert spans == [(0, 32, 0, 48), (32, 64, 16, 80), (64, 96, 48, 100), (96, 100, 80, 100)]
    for bad in ((100, 24, 16), (100, 32, 8), (100, 0, 16)):
        with pytest.raises(InputError, match="multiple of 16"):
            S.tile_spans(*bad)


def saved_bytes(model, precision, h, w, channels_last=False):
    """Bytes of the distinct storages autograd saves for one tilt's loss (weights excluded)."""
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    storages = {}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            storages[st.data_ptr()] = st.nbytes()
        return t

    target = torch.rand(1, 128, h // 2, w // 2)
    grams = [torch.rand(1, c, c) for c in (64, 128, 256, 512, 512)]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        feats = losses.activations(model, x, losses.ALL_LAYERS, precision, channels_last)
        losses.total_loss(feats, target, grams)
    return sum(storages.values())


def test_saved_bytes_per_pixel_matches_autograd(model):
    for precision, cl in (("fp32", False), ("bf16", False), ("fp32", True)):
        small = saved_bytes(model, precision, 32, 32, cl)
        big = saved_bytes(model, precision, 64, 48, cl)
        per_pixel = (big - small) / (64 * 48 - 32 * 32)
        model_value = S.saved_bytes_per_pixel(precision)
        print(f"{precision} channels_last={cl}: {per_pixel:.1f} B/px saved, model {model_value}")
        assert abs(per_pixel - model_value) <= 0.005 * model_value
    # bf16 saves bf16 activations only (the Gram matrices upcast transiently)
    assert S.saved_bytes_per_pixel("bf16") < 0.65 * S.saved_bytes_per_pixel("fp32")
    assert S.saved_bytes_per_pixel("tf32") == S.saved_bytes_per_pixel("fp32")


def test_pick_batch_size_and_tile():
    gib = 1024**3
    assert S.pick_batch_size(1024, 1024, "fp32") == S.CPU_BATCH_SIZE  # no device: CPU
    assert S.pick_batch_size(1024, 1024, "fp32", device="cpu") == S.CPU_BATCH_SIZE
    for precision in ("fp32", "bf16"):
        last = 0
        for free in (4 * gib, 16 * gib, 40 * gib, 80 * gib):
            b = S.pick_batch_size(1024, 1024, precision, free)
            assert b >= last
            last = b
            if 1 < b < 16:  # the largest batch that fits in 85 % of the free memory
                assert S.estimate_bytes(1024, 1024, precision, b) <= 0.85 * free
                assert S.estimate_bytes(1024, 1024, precision, b + 1) > 0.85 * free
    assert S.pick_batch_size(1024, 1024, "bf16", 20 * gib) > S.pick_batch_size(
        1024, 1024, "fp32", 20 * gib
    )
    assert S.pick_batch_size(3500, 3500, "fp32", 8 * gib) == 1  # never 0
    assert S.pick_batch_size(64, 64, "fp32", 80 * gib) == 16  # capped
    assert S.pick_batch_size(64, 64, "fp32", 80 * gib, max_batch=64) == 64
    # tiles: none when a whole tilt fits, else balanced multiples of 16 that fit
    assert S.pick_tile(1024, 1024, "fp32", 16 * gib) is None
    assert S.pick_tile(3500, 3500, "fp32") is None  # CPU
    for free in (4 * gib, 16 * gib):
        tile = S.pick_tile(3500, 3500, "fp32", free)
        assert tile is not None and tile % 16 == 0
        assert S.estimate_bytes(3500, 3500, "fp32", 1, tile) <= 0.85 * free
    assert S.pick_tile(3500, 3500, "fp32", 16 * gib) == 1760  # 2 x 2 tiles of ~1750


def tiled_case(model, h, w, seed):
    """A float64 copy of the model and one normalised tilt: rounding cannot hide an error."""
    model64 = VGG19Features(seed=None).double().eval().requires_grad_(False)
    model64.load_state_dict(model.state_dict())
    content, style, init = make_stacks(t=1, h=h, w=w, seed=seed)
    cn, sn, xn = (S.normalize(x, *S.minmax(x)).double() for x in (content, style, init))
    x0 = xn[:, None].expand(-1, 3, -1, -1).contiguous()
    return model64, cn, sn, x0


def test_tiled_gradient_equals_untiled(model):
    """Two passes over tiles with the 80 px halo give the whole tilt's gradient (float64).

    In float64 the only differences are rounding (1e-16); a halo below the receptive margin
    is visibly wrong. (In fp32 the scaled-MSE's ``sign(a - b)`` can flip at Gram entries
    that differ from the style's by rounding only; see the end-to-end test.)
    """
    for h, w, tile in ((208, 16, 48), (16, 208, 48)):  # windows cut on one or both sides
        model64, cn, sn, x0 = tiled_case(model, h, w, seed=h)
        grams = S.style_grams(model64, sn)
        assert grams[0].dtype == torch.float64
        whole = losses.loss_gradient(model64, cn, x0, grams, "fp32")
        tiled = loss_gradient_tiled(model64, cn, x0, grams, "fp32", tile, S.default_halo())
        err = float((tiled - whole).abs().max() / whole.std())
        print(f"{h}x{w} tiles of {tile} (float64): max |diff| = {err:.1e} x gradient std")
        assert err < 1e-9
        if h > w:  # a halo below the receptive margin is not exact
            short = loss_gradient_tiled(model64, cn, x0, grams, "fp32", tile, 48)
            assert float((short - whole).abs().max() / whole.std()) > 1e-4
            for a, b in zip(S.style_grams(model64, sn, tile=tile), grams, strict=True):
                assert float((a - b).abs().max() / b.abs().max()) < 1e-12


def test_tiled_style_transfer_equals_untiled(model):
    """The brief's case: 96 x 80 in tiles of 48 (+ halo), fp32, end to end."""
    content, style, init = make_stacks(t=1, h=96, w=80, seed=5)
    whole = S.style_transfer(content, style, init, model)
    tiled = S.style_transfer(content, style, init, model, S.StyleRun(tile=48))
    diff = (tiled - whole).abs() / whole.std()
    print(f"tiled vs whole (fp32): mean {float(diff.mean()):.1e}, max {float(diff.max()):.1e} std")
    # Rounding only (~1e-7 here), which FakET's step can magnify at a few pixels (vgg.py), and
    # up to ~4e-4 where a Gram difference at rounding level flips its sign: any other
    # rounding change (batch size, channels-last, TF32) can do the same.
    assert float(diff.mean()) < 1e-3 and float((diff > 1e-3).float().mean()) < 0.02
    cache = S.GramCache()
    S.style_transfer(content, style, init, model, gram_cache=cache)
    S.style_transfer(content, style, init, model, S.StyleRun(tile=48), gram_cache=cache)
    assert cache.misses == 2  # tiled matrices are cached apart from whole-tilt ones
    with pytest.raises(InputError, match="multiple of 16"):
        S.style_transfer(content, style, init, model, S.StyleRun(tile=40))
    with pytest.raises(InputError, match="tile must be"):
        S.style_transfer(content, style, init, model, S.StyleRun(tile="big"))


def test_fast_paths_agree_with_fp32(model):
    """channels_last and the folded normalisation change rounding only; 'auto' batches too."""
    content, style, init = make_stacks(t=3)
    ref = S.style_transfer(content, style, init, model)
    auto = S.StyleRun(batch_size="auto")
    assert torch.equal(S.style_transfer(content, style, init, model, auto), ref)
    nhwc = S.style_transfer(content, style, init, model, S.StyleRun(channels_last=True))
    folded_model = VGG19Features(seed=0).eval().requires_grad_(False)
    folded_model.fold_normalization = True
    folded = S.style_transfer(content, style, init, folded_model)
    for name, got in (("channels_last", nhwc), ("fold_normalization", folded)):
        frac = float((got - ref).abs().mean() / ref.std())
        print(f"{name} vs fp32: mean |diff| = {frac:.1e} x output std")
        assert frac < 1e-4  # documented: rounding level (~1e-7 .. 1e-6 on CPU)
    with pytest.raises(InputError, match="'auto'"):
        S.style_transfer(content, style, init, model, S.StyleRun(batch_size="big"))
    saved = torch.backends.cudnn.benchmark
    with S.cudnn_benchmark_mode(not saved):
        assert torch.backends.cudnn.benchmark is (not saved)
    assert torch.backends.cudnn.benchmark is saved


def test_per_batch_statistics_match_as_on_a_gpu(model, monkeypatch):
    """The GPU's per-batch std/mean match (here forced on the CPU) equals the whole-stack one."""
    content, style, init = make_stacks(t=3)
    whole = S.style_transfer(content, style, init, model, S.StyleRun(batch_size=2))
    monkeypatch.setattr(transfer, "_match_per_batch", lambda device: True)
    batched = S.style_transfer(content, style, init, model, S.StyleRun(batch_size=2))
    assert torch.allclose(batched, whole, rtol=1e-6, atol=1e-6 * float(whole.abs().max()))


# ----------------------------------------------------------------- on a CUDA GPU
# These run wherever a GPU is (the `gpu` marker); CI and the CPU machine skip them.

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _mean_rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.cpu() - want).abs().mean() / want.std())


@pytest.mark.gpu
@needs_cuda
def test_cuda_precisions_against_the_cpu_fp32_path(model):
    """fp32 and TF32 on the GPU within the TF32-level target of the CPU's fp32; bf16 looser."""
    content, style, init = make_stacks(t=3, h=64, w=96)
    want = S.style_transfer(content, style, init, model)
    gpu_model = VGG19Features(seed=0).eval().requires_grad_(False).cuda()
    gpu_model.weights_id = model.weights_id
    got = {
        p: S.style_transfer(
            content.cuda(), style.cuda(), init.cuda(), gpu_model, S.StyleRun(precision=p)
        )
        for p in ("fp32", "tf32", "bf16")
    }
    for p, x in got.items():
        assert x.device.type == "cuda" and x.dtype == torch.float32
        print(f"cuda {p} vs cpu fp32: mean |diff| = {_mean_rel(x, want):.2e} x std")
    assert _mean_rel(got["fp32"], want) <= 0.015
    assert _mean_rel(got["tf32"], want) <= 0.015
    assert _mean_rel(got["bf16"], want) <= 0.10  # documented 4-5 % on the CPU


@pytest.mark.gpu
@needs_cuda
def test_cuda_deterministic_mode_repeats_bit_for_bit(model):
    from faket_dask.pipeline import deterministic_mode

    content, style, init = (x.cuda() for x in make_stacks(t=4, h=64, w=64))
    gpu_model = VGG19Features(seed=0).eval().requires_grad_(False).cuda()
    with deterministic_mode(True, "cuda"):
        runs = [
            S.style_transfer(
                content, style, init, gpu_model, S.StyleRun(batch_size=2, cudnn_benchmark=False)
            )
            for _ in range(2)
        ]
    assert torch.equal(runs[0], runs[1])


@pytest.mark.gpu
@needs_cuda
def test_cuda_auto_batch_and_a_real_out_of_memory_back_off(model, caplog):
    """Under a small memory cap a batch really runs out of memory and is halved, not failed."""
    content, style, init = (x.cuda() for x in make_stacks(t=8, h=512, w=512))
    gpu_model = VGG19Features(seed=0).eval().requires_grad_(False).cuda()
    one = S.style_transfer(content, style, init, gpu_model, S.StyleRun(batch_size=1))
    auto = S.style_transfer(content, style, init, gpu_model, S.StyleRun(batch_size="auto"))
    assert _mean_rel(auto, one.cpu()) <= 0.015
    assert S.pick_batch_size(512, 512, "fp32", device="cuda") >= 1
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    # one 512² tilt needs about 0.6 GiB with the fixed overhead; 8 need about 3.5 GiB
    cap = (torch.cuda.memory_allocated() + 2 * 1024**3) / total
    torch.cuda.set_per_process_memory_fraction(min(cap, 1.0))
    try:
        with caplog.at_level(logging.WARNING, logger="faket_dask.stages.style"):
            capped = S.style_transfer(content, style, init, gpu_model, S.StyleRun(batch_size=8))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert any("out of memory on a batch of 8 tilts" in r.getMessage() for r in caplog.records)
    assert _mean_rel(capped, one.cpu()) <= 0.015
