"""Tests of stages.style.vgg: torchvision's layer layout, the reference's forward, seeded init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from faket_dask.errors import InputError
from faket_dask.stages.style.vgg import (
    CONTENT_LAYER,
    CONV_INDICES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    STYLE_LAYERS,
    VGG19Features,
    min_size,
    random_init,
)

pytestmark = pytest.mark.timeout(60)

ALL = (1, 6, 8, 11, 20, 29)

# torchvision.models.vgg19().features[:30], written out: (index, out_channels, in_channels).
TORCHVISION_CONVS = [
    (0, 64, 3), (2, 64, 64), (5, 128, 64), (7, 128, 128), (10, 256, 128), (12, 256, 256),
    (14, 256, 256), (16, 256, 256), (19, 512, 256), (21, 512, 512), (23, 512, 512),
    (25, 512, 512), (28, 512, 512),
]  # fmt: skip


@pytest.fixture(scope="module")
def model() -> VGG19Features:
    return VGG19Features(seed=0).eval().requires_grad_(False)


def reference_forward(model: VGG19Features, x: torch.Tensor, layers) -> dict[int, torch.Tensor]:
    """The reference's forward: ImageNet-normalise, then torchvision's modules in order."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    h = (x - mean) / std
    out = {}
    for i in range(max(layers) + 1):
        h = model.features[i](h)  # features[0] is an nn.Conv2d padding with 'replicate'
        if i in layers:
            out[i] = h.clone()
    return out


def test_layer_layout_matches_torchvision(model):
    feats = model.features
    assert len(feats) == 30
    assert CONV_INDICES == tuple(i for i, _, _ in TORCHVISION_CONVS)
    for i, cout, cin in TORCHVISION_CONVS:
        conv = feats[i]
        assert isinstance(conv, nn.Conv2d)
        assert (conv.in_channels, conv.out_channels) == (cin, cout)
        assert conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.stride == (1, 1)
        assert conv.padding_mode == ("replicate" if i == 0 else "zeros")
        assert isinstance(feats[i + 1], nn.ReLU)
    for i in (4, 9, 18, 27):
        assert isinstance(feats[i], nn.MaxPool2d)
        assert feats[i].kernel_size == 2 and feats[i].stride == 2
    keys = list(model.state_dict())
    assert keys == [
        f"features.{i}.{p}" for i, _, _ in TORCHVISION_CONVS for p in ("weight", "bias")
    ]
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["features.28.weight"] == (512, 512, 3, 3)
    assert shapes["features.0.bias"] == (64,)
    assert sum(p.numel() for p in model.parameters()) == 12_944_960  # ≈12.9 M (spec §6)
    assert STYLE_LAYERS == (1, 6, 11, 20, 29) and CONTENT_LAYER == 8


def test_forward_shapes_and_stops_at_deepest_layer(model):
    called = set()
    handles = [
        m.register_forward_hook(lambda mod, inp, out, i=i: called.add(i))
        for i, m in enumerate(model.features)
    ]
    try:
        out = model(torch.rand(2, 3, 32, 48), [CONTENT_LAYER])
        assert set(out) == {8} and out[8].shape == (2, 128, 16, 24)
        assert max(called) == 8  # nothing past relu2_2 ran
        called.clear()
        out = model(torch.rand(2, 3, 32, 48), ALL)
        assert max(called) == 29
    finally:
        for h in handles:
            h.remove()
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        1: (2, 64, 32, 48),
        6: (2, 128, 16, 24),
        8: (2, 128, 16, 24),
        11: (2, 256, 8, 12),
        20: (2, 512, 4, 6),
        29: (2, 512, 2, 3),
    }


def test_explicit_path_is_the_reference_forward_bit_for_bit(model):
    x = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(1))
    assert model.fold_normalization is False  # the default
    ours = model(x, ALL)
    ref = reference_forward(model, x, ALL)
    for k in ALL:
        assert torch.equal(ours[k], ref[k]), k


def test_folded_normalisation_equals_explicit(model):
    x = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(2))
    explicit = model(x, ALL)
    folded_model = VGG19Features(seed=0).eval().requires_grad_(False)
    folded_model.fold_normalization = True
    folded = folded_model(x, ALL)
    for k in ALL:
        scale = explicit[k].abs().max()
        err = (folded[k] - explicit[k]).abs().max() / scale
        assert err < 1e-5, (k, float(err))
    # Same on the replicate-padded border, where the fold is exact only because of the padding.
    x_edge = torch.zeros(1, 3, 16, 16)
    x_edge[..., 0, :] = 1.0
    a = model(x_edge, [1])[1]
    b = folded_model(x_edge, [1])[1]
    assert (a - b).abs().max() < 1e-5


def test_gray_input_is_replicated_to_three_channels(model):
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    gray = model(x, ALL)
    rgb = model(x.expand(-1, 3, -1, -1).contiguous(), ALL)
    for k in ALL:
        assert torch.equal(gray[k], rgb[k])


def test_three_channels_get_different_gradients(model):
    """Why the channel replication is not folded: the identical channels' gradients differ."""
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(4)).expand(-1, 3, -1, -1)
    x = x.clone().requires_grad_(True)
    model(x, [8])[8].square().sum().backward()
    g = x.grad[0]
    assert not torch.allclose(g[0], g[1]) and not torch.allclose(g[1], g[2])


def test_min_size(model):
    assert min_size([8]) == 2 and min_size(ALL) == 16 and min_size([1]) == 1
    model(torch.rand(1, 3, 16, 16), ALL)
    with pytest.raises(InputError, match="at least 16x16"):
        model(torch.rand(1, 3, 15, 64), ALL)
    model(torch.rand(1, 3, 4, 4), [8])  # shallow layers accept small inputs


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="layer indices"):
        model(torch.rand(1, 3, 16, 16), [30])
    with pytest.raises(ValueError, match="layer indices"):
        model(torch.rand(1, 3, 16, 16), [0])
    with pytest.raises(ValueError, match=r"\(B, 1\|3, H, W\)"):
        model(torch.rand(3, 16, 16), [1])


def test_random_init_is_seeded_kaiming_fan_out():
    state_before = torch.random.get_rng_state()
    a = VGG19Features(seed=5).state_dict()
    b = VGG19Features(seed=5).state_dict()
    c = VGG19Features(seed=6).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state_before)  # global RNG untouched
    for k in a:
        assert torch.equal(a[k], b[k])
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])
    for i, _, _ in TORCHVISION_CONVS:
        assert torch.count_nonzero(a[f"features.{i}.bias"]) == 0
    w = a["features.28.weight"]  # 2.4 M samples of N(0, 2 / fan_out), fan_out = 512 * 9
    expected = math.sqrt(2.0 / (512 * 9))
    assert abs(float(w.std()) / expected - 1) < 0.01
    assert abs(float(w.mean())) < 0.01 * expected


def test_random_init_on_an_existing_model_and_weights_id():
    m = VGG19Features(seed=None)
    assert m.weights_id == "uninitialized"
    random_init(m, 7)
    assert m.weights_id == "random:7"
    assert torch.equal(m.features[0].weight, VGG19Features(seed=7).features[0].weight)


@pytest.mark.parametrize("channels_last", [False, True])
def test_recomputing_pools_give_the_stored_index_gradient_and_save_no_indices(model, channels_last):
    """MaxPool2x2 against torch's own MaxPool2d: same values, same gradient bytes."""
    import copy

    plain = copy.deepcopy(model)
    for i in (4, 9, 18, 27):
        plain.features[i] = nn.MaxPool2d(2, 2)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x0 = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(5))
    x0 = x0.contiguous(memory_format=fmt)
    grads, dtypes = [], []
    for net in (model, plain):
        x = x0.clone().requires_grad_(True)
        saved: list[torch.dtype] = []

        def pack(t, saved=saved):
            saved.append(t.dtype)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            feats = net(x, ALL)
            loss = sum((f * f).mean() for f in feats.values())
        loss.backward()
        grads.append(x.grad)
        dtypes.append(saved)
    assert torch.equal(grads[0], grads[1])
    assert torch.int64 not in dtypes[0]  # no pool indices kept
    assert dtypes[1].count(torch.int64) == 4  # torch's pools keep one index tensor each
    with torch.no_grad():
        assert all(torch.equal(model(x0, ALL)[k], plain(x0, ALL)[k]) for k in ALL)
