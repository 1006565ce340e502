"""FakET's one-step neural style transfer: VGG-19 features, Gram losses, one Adam step.

``losses`` (constants, the network pass, Gram matrices, scaled MSE), ``tiled`` (receptive
geometry and the exact tiled gradient), ``memory`` (batch and tile sizes that fit), ``transfer``
(one step, the Gram cache, whole stacks), ``vgg`` (the network) and ``weights`` (its weights).
"""

from faket_dask.stages.style.losses import (
    ADAM_EPS,
    AVG_DECAY,
    CONTENT_WEIGHT,
    LOSS_EPS,
    PRECISIONS,
    STEP_SIZE,
    STYLE_LAYER_WEIGHTS,
    cudnn_benchmark_mode,
    ema_weights,
    gram,
    minmax,
    normalize,
    precision_mode,
    scaled_mse,
)
from faket_dask.stages.style.memory import (
    CPU_BATCH_SIZE,
    bytes_per_pixel,
    estimate_bytes,
    free_device_bytes,
    pick_batch_size,
    pick_tile,
    saved_bytes_per_pixel,
)
from faket_dask.stages.style.tiled import (
    TILE_ALIGN,
    default_halo,
    layer_geometry,
    receptive_margin,
    tile_spans,
)
from faket_dask.stages.style.transfer import (
    ENV_FAULT_OOM,
    GramCache,
    StyleRun,
    style_grams,
    style_step,
    style_transfer,
)

__all__ = [
    "ADAM_EPS",
    "AVG_DECAY",
    "CONTENT_WEIGHT",
    "CPU_BATCH_SIZE",
    "ENV_FAULT_OOM",
    "LOSS_EPS",
    "PRECISIONS",
    "STEP_SIZE",
    "STYLE_LAYER_WEIGHTS",
    "TILE_ALIGN",
    "GramCache",
    "StyleRun",
    "bytes_per_pixel",
    "cudnn_benchmark_mode",
    "default_halo",
    "ema_weights",
    "estimate_bytes",
    "free_device_bytes",
    "gram",
    "layer_geometry",
    "minmax",
    "normalize",
    "pick_batch_size",
    "pick_tile",
    "precision_mode",
    "receptive_margin",
    "saved_bytes_per_pixel",
    "scaled_mse",
    "style_grams",
    "style_step",
    "style_transfer",
    "tile_spans",
]
