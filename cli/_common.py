"""Options and small helpers shared by the CLI modules (no numerics here)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from faket_dask.errors import InputError

if TYPE_CHECKING:
    import numpy as np

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
StoreArg = Annotated[Path, typer.Argument(help="Dataset store written by `faket-dask generate`.")]
WorkerTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--worker-timeout",
        help="Seconds to wait for the scheduler and a first worker, and for a lost scheduler "
        "connection to come back.",
    ),
]


def resolve_angles(
    angles: str | None, angles_file: Path | None, *, required: bool = False
) -> np.ndarray | None:
    """Angles (T,) from ``--angles`` or ``--angles-file``, validated; ``None`` when neither.

    ``None`` lets the library use the input's own angles; ``required`` refuses it.
    """
    # numpy: loaded when a command runs, so that --help stays fast
    from faket_dask.angles import parse_angles, read_tilt_file

    if angles is not None and angles_file is not None:
        raise InputError("give --angles or --angles-file, not both")
    if angles is not None:
        return parse_angles(angles)
    if angles_file is not None:
        return read_tilt_file(angles_file)
    if required:
        raise InputError(
            "tilt angles are unknown; pass --angles START:STOP:STEP or --angles-file F.tlt"
        )
    return None


def required_angles(angles: str | None, angles_file: Path | None) -> np.ndarray:
    """Angles (T,) from ``--angles`` or ``--angles-file``; refuse a command without them."""
    tilt_angles = resolve_angles(angles, angles_file, required=True)
    assert tilt_angles is not None
    return tilt_angles


def check_output(
    path: Path, overwrite: bool, *, tilts: bool = False, siblings: tuple[str, ...] = ()
) -> None:
    """Refuse an existing output (unless ``overwrite``) or an unwritable folder, before any work.

    Every file the command will write is checked before any is written: with ``tilts``, an
    MRC tilt-series' ``.tlt`` beside it; ``siblings``, more suffixes written beside it
    (``.synth.json``). An existing Zarr store or group at ``path`` is refused too.
    """
    # mrcfile: loaded when a command runs, so that --help stays fast
    from faket_dask.io.mrc import MRC_SUFFIXES

    is_zarr = any(p.lower().endswith(".zarr") for p in path.parts)
    if not is_zarr and path.suffix.lower() not in (*MRC_SUFFIXES, ".json"):
        raise InputError(
            f"{path}: unknown extension {path.suffix!r}; use .mrc (or .mrcs .st .ali .rec) or .zarr"
        )
    outputs = [path]
    if tilts and not is_zarr:
        outputs.append(path.with_suffix(".tlt"))
    outputs += [path.with_suffix(s) for s in siblings]
    for out in outputs:
        if out.exists() and not overwrite:
            raise InputError(f"{out} exists; pass --overwrite or choose another output")
    parent = path.parent if not is_zarr else Path(*path.parts[: _zarr_index(path)]) or Path(".")
    if not parent.is_dir():
        raise InputError(f"output folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise InputError(f"output folder {parent} is not writable; choose another output")


def _zarr_index(path: Path) -> int:
    return max(i for i, p in enumerate(path.parts) if p.lower().endswith(".zarr"))


def require_zarr(what: str, *paths: Path) -> None:
    """The cluster paths work on chunked Zarr: refuse other formats before connecting."""
    if not all(any(p.lower().endswith(".zarr") for p in path.parts) for path in paths):
        raise InputError(
            f"{what} on a cluster needs Zarr inputs and outputs (chunked); write .zarr "
            "(e.g. convert with the same verb locally) or drop the cluster option"
        )


def on_cluster(scheduler: str | None, scheduler_file: Path | None, profile: Path | None) -> bool:
    """Whether a cluster option was given (the verb then runs as a Dask graph over Zarr)."""
    return bool(scheduler or scheduler_file or profile)


def check_png_out(output: Path, overwrite: bool, suffixes: tuple[str, ...]) -> None:
    """Refuse a picture output with another suffix, an existing file or a missing folder."""
    if output.suffix.lower() not in suffixes:
        raise InputError(f"{output}: use one of {', '.join(suffixes)}")
    if output.exists() and not overwrite:
        raise InputError(f"{output} exists; pass --overwrite or choose another output")
    if not output.parent.is_dir() and str(output.parent) not in ("", "."):
        raise InputError(f"output folder {output.parent} does not exist; create it first")


def echo_done(path: Path | str, what: str) -> None:
    """One line saying what was written where."""
    typer.echo(f"wrote {path}: {what}")


def check_detector_px(flag: str, *values: int | None) -> None:
    """Refuse a detector size above the physical limit, before any work (InputError)."""
    from faket_dask.config import MAX_DETECTOR_PX  # numpy, pydantic: not at --help

    for v in values:
        if v is not None and not 1 <= v <= MAX_DETECTOR_PX:
            raise InputError(
                f"{flag} {v} is outside 1..{MAX_DETECTOR_PX} pixels (larger than any camera); "
                "give a smaller detector"
            )
