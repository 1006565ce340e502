"""How much device memory styling takes, and the batch and tile sizes that fit.

``batch_size='auto'`` picks the tilts per batch from free GPU memory and a per-pixel memory
model (:func:`bytes_per_pixel`, checked against autograd's saved tensors in the tests);
``tile='auto'`` picks a tile core size (:func:`pick_tile`) when one tilt alone does not fit.
docs/performance.md has the measurements.
"""

from __future__ import annotations

import torch

from faket_dask.stages.style.losses import check_precision
from faket_dask.stages.style.tiled import GEOMETRY, TILE_ALIGN, default_halo
from faket_dask.stages.style.vgg import CFG, CONTENT_LAYER

__all__ = [
    "BACKWARD_TEMP",
    "CPU_BATCH_SIZE",
    "bytes_per_pixel",
    "estimate_bytes",
    "free_device_bytes",
    "pick_batch_size",
    "pick_tile",
    "saved_bytes_per_pixel",
]

#: Backward temporaries on top of the saved activations (spec §3: about +25 %).
BACKWARD_TEMP = 0.25
#: Per-pixel bytes of a tilt's inputs, x0, its gradient, the output (fp32), per full tilt.
_STEP_BYTES_PER_PIXEL = 48
#: Weights, cuDNN workspace and allocator slack that do not scale with the batch (bytes).
_FIXED_BYTES = 768 * 1024**2
#: Tilts per batch on the CPU (one tilt per network pass there anyway, see ``_chunk``).
CPU_BATCH_SIZE = 4
#: Largest automatic batch: a 1024² tilt alone keeps a GPU busy; more only costs memory.
_MAX_BATCH = 16


def _cfg_kind() -> dict[int, str]:
    """Per layer index: ``'conv'``, ``'relu'`` or ``'pool'``."""
    kinds: dict[int, str] = {}
    i = 0
    for v in CFG:
        if v == "M":
            kinds[i] = "pool"
            i += 1
        else:
            kinds[i], kinds[i + 1] = "conv", "relu"
            i += 2
    return kinds


_CFG_KIND = _cfg_kind()


def saved_bytes_per_pixel(precision: str = "fp32") -> float:
    """Bytes per input pixel that autograd saves for the backward pass of one tilt.

    Counted from the layer configuration: every ReLU output and max-pool output (in the
    activation dtype: 4 bytes, 2 for bf16), the normalised 3-channel input (two copies, one
    of them bf16 under autocast) and the fp32 difference of the content loss at relu2_2.
    The max-pools keep no indices (:class:`~.vgg.MaxPool2x2` recomputes them).
    1432 B for fp32 (spec §3 estimated about 1.9 kB; 1672 B with the indices), 786 B for
    bf16. The tests compare it with the storages autograd really holds.
    """
    check_precision(precision)
    e = 2 if precision == "bf16" else 4
    # The normalised input: two fp32 copies; under autocast one of them is its bf16 cast.
    total = 3 * 4 + (3 * 2 if precision == "bf16" else 3 * 4.0)
    for idx, (stride, _, channels) in GEOMETRY.items():
        module = _CFG_KIND[idx]
        if module == "relu" or module == "pool":
            total += e * channels / stride**2
    stride, _, channels = GEOMETRY[CONTENT_LAYER]
    return total + 4 * channels / stride**2


def bytes_per_pixel(precision: str = "fp32") -> float:
    """Peak bytes per pixel of the network pass with autograd (one tilt, or one tile window).

    The saved activations (:func:`saved_bytes_per_pixel`) plus :data:`BACKWARD_TEMP` for
    the backward pass's gradient buffers, plus the content target at relu2_2.
    """
    stride, _, channels = GEOMETRY[CONTENT_LAYER]
    target = (2 if precision == "bf16" else 4) * channels / stride**2
    return saved_bytes_per_pixel(precision) * (1.0 + BACKWARD_TEMP) + target


def estimate_bytes(
    height: int,
    width: int,
    precision: str = "fp32",
    batch: int = 1,
    tile: int | None = None,
    halo: int | None = None,
) -> int:
    """Estimated peak device memory (bytes) of styling ``batch`` tilts of ``height x width``.

    With ``tile``, the network runs on one window of at most ``(tile + 2 halo)^2`` pixels at
    a time; the full-size step arrays (inputs, gradient, output) still scale with the tilt.
    """
    window = height * width
    if tile is not None:
        halo = default_halo() if halo is None else halo
        window = min(height, tile + 2 * halo) * min(width, tile + 2 * halo)
    per_tilt = window * bytes_per_pixel(precision) + height * width * _STEP_BYTES_PER_PIXEL
    return int(batch * per_tilt + _FIXED_BYTES)


def free_device_bytes(device: torch.device | str) -> int | None:
    """Free memory of a CUDA device (driver-free plus what torch's allocator holds unused).

    ``None`` for other devices.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free + cached)


def pick_batch_size(
    height: int,
    width: int,
    precision: str = "fp32",
    free_bytes: int | None = None,
    *,
    device: torch.device | str | None = None,
    tile: int | None = None,
    max_batch: int = _MAX_BATCH,
    fraction: float = 0.85,
) -> int:
    """Tilts per batch that fit in ``fraction`` of the free device memory.

    Parameters
    ----------
    height, width
        Tilt size in pixels.
    precision
        ``'fp32'``, ``'tf32'`` (same memory) or ``'bf16'``.
    free_bytes
        Free memory (bytes). ``None``: asked of ``device`` (CUDA), or, on the CPU,
        :data:`CPU_BATCH_SIZE` is returned (the CPU runs one tilt per pass anyway).
    tile
        Tile core size when the tiled gradient is used (memory per window, not per tilt).

    Returns
    -------
    int
        At least 1 (a single tilt that does not fit is left to the OOM back-off or tiling)
        and at most ``max_batch``.
    """
    check_precision(precision)
    if free_bytes is None:
        free_bytes = free_device_bytes(device) if device is not None else None
        if free_bytes is None:
            return CPU_BATCH_SIZE
    per_tilt = estimate_bytes(height, width, precision, 2, tile) - estimate_bytes(
        height, width, precision, 1, tile
    )
    usable = fraction * free_bytes - _FIXED_BYTES
    return int(max(1, min(max_batch, usable // per_tilt)))


def pick_tile(
    height: int,
    width: int,
    precision: str = "fp32",
    free_bytes: int | None = None,
    *,
    device: torch.device | str | None = None,
    fraction: float = 0.85,
) -> int | None:
    """Tile core size for one tilt to fit in ``fraction`` of the free memory, or ``None``.

    ``None`` when the whole tilt fits (or on the CPU, where memory is not the limit). Else the
    tiles are balanced: as few per axis as fit, all of nearly one size, multiples of 16.
    """
    check_precision(precision)
    if free_bytes is None:
        free_bytes = free_device_bytes(device) if device is not None else None
        if free_bytes is None:
            return None
    budget = fraction * free_bytes
    if estimate_bytes(height, width, precision) <= budget:
        return None
    longest = max(height, width)
    best = TILE_ALIGN
    for tile in range(longest // TILE_ALIGN * TILE_ALIGN, TILE_ALIGN - 1, -TILE_ALIGN):
        if estimate_bytes(height, width, precision, 1, tile) <= budget:
            best = tile
            break
    n = -(-longest // best)
    balanced = -(-longest // n)
    return -(-balanced // TILE_ALIGN) * TILE_ALIGN
