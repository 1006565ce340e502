"""VGG-19 feature extractor for FakET's style transfer, defined here (no torchvision needed).

:class:`VGG19Features` reproduces torchvision's ``vgg19().features[:30]`` (conv1_1 up to
relu5_1) layer for layer, so its state-dict keys are torchvision's ``features.N.weight`` /
``features.N.bias`` and torchvision's ``vgg19-dcbb9e9d.pth`` loads into it unchanged
(FakET spec §1.5, §6). As in the reference, the first convolution pads with
``'replicate'`` and pooling is ``MaxPool2d(2, 2)``.

Memory. The pools are :class:`MaxPool2x2`: with autograd on, they keep only their input (the
ReLU before them keeps the same tensor anyway) and recompute the argmax in the backward pass,
instead of keeping int64 indices, 240 bytes per input pixel over the four pools (14 % of an
fp32 pass's saved tensors, 23 % of a bf16 pass's). The gradient is the same bytes: the same
kernel gets the same indices.

Input normalisation. The reference maps an image in [0, 1] through ImageNet's per-channel
``(x - mean) / std`` and then runs conv1_1 with replicate padding. That is what runs here
(padding first, then normalising, which gives the same values bit for bit: the padded border
copies edge pixels, and each is normalised with the same operation). The normalisation could
be folded into conv1_1 (``w' = w / std[c]``, ``b' = b - sum(w * mean[c] / std[c])``); that is
exact in real arithmetic because replicate padding commutes with a per-channel affine map, and
``fold_normalization = True`` does it. It is off by default: it saves nothing measurable
(one elementwise pass over a 3-channel image, against the whole network), and it rounds
differently from the reference, which FakET's single step amplifies: ReLU and max-pool
decisions flip where values are nearly tied, rerouting a little gradient, and the update
``g / (|g| + 1e-8)`` magnifies changes to gradients near 1e-8. On 256x256 tilts with random
weights the folded path moved 52 % of the output pixels by more than 1e-5 of the output std
(mean 4e-5, max 0.48 std). That is the size of any change of rounding (another batch size,
TF32), not an error of the fold (against a float64 run, both paths are off at a few dozen
pixels), but only the unfolded path does the reference's operations in the reference's order
and so reproduces its output on the same CPU.

Grayscale input. A (B, 1, H, W) tilt is replicated to 3 channels, as the reference does. The
replication is *not* folded into conv1_1 (summing its weights over input channels) although
that would give the same forward values: FakET optimises the 3-channel image, and because
each channel has its own normalisation and conv weights the three identical channels receive
*different* gradients; the output is the mean of the three separately updated and clamped
channels (spec §1.5). A folded 1-channel image would receive the summed gradient and lose
that. So the optimised image stays (B, 3, H, W); only the no-gradient targets could be
folded, and that would save under 1 % of the network's work, so they are not either.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from faket_dask.errors import InputError

__all__ = [
    "CFG",
    "CONTENT_LAYER",
    "CONV_INDICES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LAYER_NAMES",
    "NUM_LAYERS",
    "STYLE_LAYERS",
    "MaxPool2x2",
    "VGG19Features",
    "min_size",
    "random_init",
]

# torchvision's VGG-19 ("E") configuration: channels per conv, "M" for a 2x2 max pool.
CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
    512, 512, 512, 512, "M",
)  # fmt: skip

NUM_LAYERS = 30  # features[:30]: conv1_1 (0) .. relu5_1 (29)
LAYER_NAMES = {
    1: "relu1_1",
    6: "relu2_1",
    8: "relu2_2",
    11: "relu3_1",
    20: "relu4_1",
    29: "relu5_1",
}
STYLE_LAYERS: tuple[int, ...] = (1, 6, 11, 20, 29)
CONTENT_LAYER = 8

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_POOL_INDICES = (4, 9, 18, 27, 36)


class _MaxPool2x2Recompute(torch.autograd.Function):
    """2x2 max-pool that saves its input rather than its indices (recomputed for backward)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        pooled: torch.Tensor = F.max_pool2d(x, 2, 2)
        return pooled

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        _, indices = F.max_pool2d(x, 2, 2, return_indices=True)
        grad_x: torch.Tensor = torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices
        )
        return grad_x


class MaxPool2x2(nn.MaxPool2d):
    """``MaxPool2d(2, 2)`` whose backward recomputes the argmax instead of storing it.

    Same values and gradients as ``nn.MaxPool2d(2, 2)``; saves ``8 * C`` bytes per output
    pixel of int64 indices when autograd records the pass.
    """

    def __init__(self) -> None:
        super().__init__(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool ``(B, C, H, W)`` to ``(B, C, H // 2, W // 2)``."""
        pooled: torch.Tensor
        if torch.is_grad_enabled() and x.requires_grad:
            pooled = _MaxPool2x2Recompute.apply(x)  # type: ignore[no-untyped-call]
        else:
            pooled = super().forward(x)
        return pooled


def _build_layers() -> list[nn.Module]:
    """Torchvision's ``vgg19().features[:30]``, without initialising (or drawing) any weights."""
    layers: list[nn.Module] = []
    in_ch = 3
    for v in CFG:
        if v == "M":
            layers.append(MaxPool2x2())
        else:
            assert isinstance(v, int)
            mode = "replicate" if not layers else "zeros"
            layers.append(
                nn.utils.skip_init(  # type: ignore[no-untyped-call]
                    nn.Conv2d, in_ch, v, kernel_size=3, padding=1, padding_mode=mode
                )
            )
            layers.append(nn.ReLU(inplace=True))
            in_ch = v
    return layers[:NUM_LAYERS]


def _conv_indices() -> tuple[int, ...]:
    out, i = [], 0
    for v in CFG:
        if v != "M":
            out.append(i)
        i += 1 if v == "M" else 2  # a pool, or a conv and its ReLU
    return tuple(j for j in out if j < NUM_LAYERS)


# Indices of the 13 convolutions in features[:30]: 0, 2, 5, 7, 10, ..., 28.
CONV_INDICES: tuple[int, ...] = _conv_indices()


def min_size(layers: Iterable[int]) -> int:
    """Smallest height/width the network accepts when it runs up to ``max(layers)``."""
    last = max(layers)
    size = 1
    for pool in _POOL_INDICES:
        if last < pool:
            break
        size *= 2
    return size


class VGG19Features(nn.Module):
    """VGG-19 ``features[:30]`` with a replicate-padded first conv and ImageNet normalisation.

    Parameters
    ----------
    seed
        Initialise the convolutions with :func:`random_init` under this seed; ``None`` leaves
        the parameters uninitialised (for a state dict that is loaded right after).

    Attributes
    ----------
    features
        ``nn.Sequential`` with torchvision's layer indices (state-dict keys
        ``features.N.weight`` / ``features.N.bias``).
    fold_normalization
        ``False`` (default): normalise explicitly, then conv1_1, in the reference's order.
        ``True``: the normalisation folded into conv1_1's weights (equal up to rounding; see
        the module docstring for why that is not the default).
    weights_id
        A string naming the weights (e.g. ``"random:0"``, ``"imagenet:<sha256>"``); caches of
        derived values (style Gram matrices) key on it. Whoever replaces the weights sets it.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, seed: int | None = 0) -> None:
        super().__init__()
        self.features = nn.Sequential(*_build_layers())
        self.register_buffer(
            "mean", torch.tensor(IMAGENET_MEAN, dtype=torch.float32), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(IMAGENET_STD, dtype=torch.float32), persistent=False
        )
        self.fold_normalization = False
        self.weights_id = "uninitialized"
        if seed is not None:
            random_init(self, seed)

    def _first_conv(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.features[0]
        assert isinstance(conv, nn.Conv2d) and conv.bias is not None
        mean = self.mean.view(1, 3, 1, 1)
        std = self.std.view(1, 3, 1, 1)
        # Replicate padding first: it commutes with the per-channel affine normalisation.
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        if self.fold_normalization:
            weight = conv.weight / std
            bias = conv.bias - (conv.weight * (mean / std)).sum(dim=(1, 2, 3))
            return F.conv2d(padded, weight, bias)
        return F.conv2d((padded - mean) / std, conv.weight, conv.bias)

    def forward(self, x: torch.Tensor, layers: Iterable[int]) -> dict[int, torch.Tensor]:
        """Return ``{index: activation}`` for the requested layer indices.

        Parameters
        ----------
        x
            (B, 3, H, W) or (B, 1, H, W) images in [0, 1] (a single channel is replicated to
            three). H and W must be at least :func:`min_size` of ``layers`` (16 for relu5_1).
        layers
            torchvision indices, e.g. ``(8,)`` for relu2_2; the network stops at the deepest.
        """
        wanted = sorted(set(layers))
        if not wanted or wanted[0] < 1 or wanted[-1] >= NUM_LAYERS:
            # Index 0 (conv1_1 before its ReLU) is not exposed: the in-place ReLU overwrites it.
            raise ValueError(f"layer indices must lie in 1..{NUM_LAYERS - 1}, got {wanted}")
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected a (B, 1|3, H, W) tensor, got shape {tuple(x.shape)}")
        need = min_size(wanted)
        if min(x.shape[-2:]) < need:
            ih, iw = x.shape[-2:]
            raise InputError(f"image is {ih}x{iw} but VGG-19 needs at least {need}x{need} pixels")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        out: dict[int, torch.Tensor] = {}
        h = self._first_conv(x)
        for i in range(1, wanted[-1] + 1):
            h = self.features[i](h)
            if i in wanted:
                out[i] = h
        return out


def random_init(model: nn.Module, seed: int) -> nn.Module:
    """Seeded version of torchvision's default VGG init for every ``nn.Conv2d`` in ``model``.

    Kaiming-normal weights (``mode='fan_out'``, ``nonlinearity='relu'``) and zero biases, drawn
    on the CPU from a ``torch.Generator`` seeded with ``seed`` in module order, then copied to
    the parameters' device: identical values on every device, and the global RNG is untouched.
    The distribution is torchvision's; the values are not the ones ``torch.manual_seed(seed);
    vgg19()`` gives (that also draws the default inits and the classifier first).
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                w = torch.empty(m.weight.shape, dtype=torch.float32)
                nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu", generator=gen)
                m.weight.copy_(w)
                if m.bias is not None:
                    m.bias.zero_()
    if isinstance(model, VGG19Features):
        model.weights_id = f"random:{int(seed)}"
    return model
