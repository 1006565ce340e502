"""What a run will cost, checked before any work starts: memory per sample, disk per sample.

The numbers are the ``--dry-run`` ones (:func:`faket_dask.dist.plan.estimate_sample_bytes`)
plus the worker's working set; a run that cannot fit is refused with one line that names the
knob to turn.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from faket_dask.config import SimulationConfig
from faket_dask.dist.plan import _n_tilts, estimate_sample_bytes
from faket_dask.errors import InputError
from faket_dask.stages.sample import default_slab_size

__all__ = ["STYLE_BYTES_PER_PIXEL", "check_budget", "host_memory_bytes", "sample_memory_bytes"]

STYLE_BYTES_PER_PIXEL = 1432
"""VGG-19's saved activations per pixel of a styled tilt, fp32 (docs/performance.md)."""
REMOTE_MEMORY_LIMIT = 2**40
"""No worker of a remote cluster has more than 1 TiB for one sample."""


def sample_memory_bytes(config: SimulationConfig, n_tilts: int) -> int:
    """Estimated peak bytes of one sample on a worker.

    Two Y slabs of the volume (float32 density, uint8 class and uint32 instance masks: the
    volume is built and projected slab by slab, never whole), the tilt stacks
    (noiseless, each output modality and two working copies, float32) and the style batch's
    VGG-19 activations (``STYLE_BYTES_PER_PIXEL`` per pixel per tilt of the batch).
    """
    h, w = config.tilts.shape
    z = config.sample.thickness
    # the volume is built and projected by Y slabs (two in flight with the read-ahead), never whole
    rows = min(h, config.sample.slab_size or default_slab_size((z, h, w)))
    volume = 2 * z * rows * w * (4 + 1 + 4)
    tilts = n_tilts * h * w * 4 * (len(config.output.modalities) + 3)
    style = 0
    if config.style.enabled:
        # "auto" picks the batch from the memory there is, so its floor is one tilt
        batch = 1 if config.style.batch_size == "auto" else int(config.style.batch_size)
        style = min(batch, n_tilts) * h * w * STYLE_BYTES_PER_PIXEL
    return volume + tilts + style


def host_memory_bytes() -> int:
    """Physical memory of this machine (0 when unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_budget(
    config: SimulationConfig,
    n_todo: int,
    store: str | os.PathLike[str],
    *,
    local: bool,
    warn: Callable[[str], None] | None = None,
    dry_run: bool = False,
) -> dict[str, int]:
    """Refuse a run whose sample cannot fit in a worker's memory or on the store's disk.

    ``local``: the embedded cluster on this machine (its memory is the limit; else 1 TiB).
    ``dry_run``: a plan computes nothing, so a sample too large for this machine is a warning
    (the plan is still shown, e.g. for a cluster whose workers have more memory).
    Returns ``{"memory_per_sample", "disk_per_sample", "disk_free"}``.

    Raises
    ------
    InputError
        One sample needs more memory than a worker can have, or more disk than is free.
    """
    n_tilts = _n_tilts(config)
    mem = sample_memory_bytes(config, n_tilts)
    limit = host_memory_bytes() if local else REMOTE_MEMORY_LIMIT
    where = "this machine's memory" if local else "any worker's memory (1 TiB)"
    if limit and mem > limit:
        h, w = config.tilts.shape
        message = (
            f"one sample needs about {_gib(mem)} ({n_tilts} tilts of {h} x {w}, a volume "
            f"{config.sample.thickness} voxels thick), more than {where} ({_gib(limit)}); "
            "choose a smaller tilts.shape, sample.thickness, fewer angles or style.batch_size"
        )
        if not dry_run:
            raise InputError(message)
        if warn is not None:
            warn(f"warning: {message}")
    disk = sum(estimate_sample_bytes(config).values())
    folder = Path(store).expanduser().resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if disk > free:
        raise InputError(
            f"one sample stores about {_gib(disk)} uncompressed, more than the {_gib(free)} free "
            f"on {folder}; free space, choose another disk, or a smaller tilts.shape, fewer "
            "output.modalities or output.dtype float16"
        )
    if warn is not None and disk * n_todo > free:
        warn(
            f"warning: {n_todo} samples store about {_gib(disk * n_todo)} uncompressed, more "
            f"than the {_gib(free)} free on {folder}; the run stops when the disk is full"
        )
    return {"memory_per_sample": mem, "disk_per_sample": disk, "disk_free": free}
