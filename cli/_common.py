"""Options and small helpers shared by the CLI modules (no numerics here)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import numpy as np
    import torch

VarOpt = Annotated[
    str | None, typer.Option("--var", help="Zarr input: the array to read when there are several.")
]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda, or auto (cuda when available).")]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace an existing output.")]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Address of a running Dask scheduler (overrides $DASK_SCHEDULER_ADDRESS).",
    ),
]
SchedulerFileOpt = Annotated[
    Path | None,
    typer.Option("--scheduler-file", help="Scheduler file written by `dask scheduler`."),
]
ProfileOpt = Annotated[
    Path | None,
    typer.Option(
        "--cluster-profile",
        help="YAML {cluster: import.path, kwargs: {...}, scale: N | adapt: {...}, "
        "dask_config: {...}} (e.g. dask_jobqueue.SLURMCluster).",
    ),
]
AnglesOpt = Annotated[
    str | None,
    typer.Option(
        help="START:STOP:STEP (STOP included) or a comma list (default: the input's own)."
    ),
]
AnglesFileOpt = Annotated[
    Path | None, typer.Option(help="IMOD .tlt/.rawtlt file, one angle per line.")
]
TiltsPerBlockOpt = Annotated[
    int, typer.Option(help="On a cluster: tilts per task and per output shard.")
]
WorkerTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--worker-timeout",
        help="Seconds to wait for the scheduler and a first worker, and for a lost scheduler "
        "connection to come back.",
    ),
]


def resolve_angles(
    angles: str | None,
    angles_file: Path | None,
    *,
    fallback: np.ndarray | None = None,
    required: bool = False,
) -> np.ndarray:
    """Angles from ``--angles`` or ``--angles-file``, else the input's own, validated."""
    from faket_dask.angles import parse_angles, read_tilt_file, validate_angles
    from faket_dask.errors import InputError

    if angles is not None and angles_file is not None:
        raise InputError("give --angles or --angles-file, not both")
    if angles is not None:
        return parse_angles(angles)
    if angles_file is not None:
        return read_tilt_file(angles_file)
    if fallback is not None:
        return validate_angles(fallback, source="input's tilt angles")
    if required:
        raise InputError(
            "tilt angles are unknown; pass --angles START:STOP:STEP or --angles-file F.tlt"
        )
    raise InputError("no angles")


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse an existing output (unless ``overwrite``) or an unwritable folder, before any work."""
    from faket_dask.errors import InputError
    from faket_dask.io.mrc import MRC_SUFFIXES

    is_zarr = any(p.lower().endswith(".zarr") for p in path.parts)
    if not is_zarr and path.suffix.lower() not in (*MRC_SUFFIXES, ".json"):
        raise InputError(
            f"{path}: unknown extension {path.suffix!r}; use .mrc (or .mrcs .st .ali .rec) or .zarr"
        )
    if path.exists() and not overwrite and not is_zarr:
        raise InputError(f"{path} exists; pass --overwrite or choose another output")
    parent = path.parent if not is_zarr else Path(*path.parts[: _zarr_index(path)]) or Path(".")
    if not parent.is_dir():
        raise InputError(f"output folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise InputError(f"output folder {parent} is not writable; choose another output")


def _zarr_index(path: Path) -> int:
    return max(i for i, p in enumerate(path.parts) if p.lower().endswith(".zarr"))


def require_zarr(what: str, *paths: Path) -> None:
    """The cluster paths work on chunked Zarr: refuse other formats before connecting."""
    from faket_dask.errors import InputError

    if not all(any(p.lower().endswith(".zarr") for p in path.parts) for path in paths):
        raise InputError(
            f"{what} on a cluster needs Zarr inputs and outputs (chunked); write .zarr "
            "(e.g. convert with the same verb locally) or drop the cluster option"
        )


def check_tilt_counts(counts: dict[str, int]) -> None:
    """All inputs must have the same number of tilts."""
    from faket_dask.errors import InputError

    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise InputError(f"tilt counts differ ({listed}); give inputs with the same tilts")


def pick_device(device: str) -> torch.device:
    """``auto`` is CUDA when available (the CLI process runs no cluster), else CPU."""
    import torch

    from faket_dask.errors import InputError

    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device {device!r} is not known; use cpu, cuda or auto")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda but no CUDA GPU is available; use --device cpu")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def echo_done(path: Path | str, what: str) -> None:
    """One line saying what was written where."""
    typer.echo(f"wrote {path}: {what}")
