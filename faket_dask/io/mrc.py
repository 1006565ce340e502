"""MRC files: read with the voxel size, write with the voxel size, atomically."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import mrcfile
import numpy as np

from faket_dask.errors import InputError

__all__ = ["MRC_SUFFIXES", "is_mrc", "read_mrc", "read_mrc_header", "read_mrc_rows", "write_mrc"]

MRC_SUFFIXES = (".mrc", ".mrcs", ".st", ".ali", ".rec", ".map")

# mrcfile's modes: what each numpy dtype is written as (uint32/int32/float64 are not MRC modes)
_WRITE_DTYPES = {
    np.dtype(np.float32): np.float32,
    np.dtype(np.float16): np.float16,
    np.dtype(np.int8): np.int8,
    np.dtype(np.uint8): np.uint8,
    np.dtype(np.int16): np.int16,
    np.dtype(np.uint16): np.uint16,
}


def is_mrc(path: str | Path) -> bool:
    """Whether a path names an MRC-family file by its extension."""
    return Path(path).suffix.lower() in MRC_SUFFIXES


def read_mrc(path: str | Path) -> tuple[np.ndarray, float | None]:
    """Read an MRC file.

    Returns
    -------
    data
        The array as stored: `(Z, Y, X)` for volumes and tilt-series, `(Y, X)` for images.
    voxel_size
        The X voxel size in Å from the header, or ``None`` when it is unset (0).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist; check the path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, mode="r", permissive=False) as mrc:
                data = np.asarray(mrc.data).copy()
                voxel = float(mrc.voxel_size.x)
    except (ValueError, OSError, EOFError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(
            f"{path} is not a readable MRC file ({reason}); it may be truncated or corrupt"
        ) from None
    if data.size == 0:
        raise InputError(f"{path} holds no data; it may be truncated")
    return data, (voxel if voxel > 0 else None)


def read_mrc_header(path: str | Path) -> tuple[tuple[int, ...], float | None]:
    """The array shape and X voxel size (Å, ``None`` when unset) of an MRC file, memory-mapped.

    Reads the header only (lenient, as for files written by other tools).
    """
    if not Path(path).is_file():
        raise InputError(f"{path} does not exist; check the path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.mmap(str(path), mode="r", permissive=True) as m:
                shape = tuple(int(s) for s in m.data.shape)
                voxel = float(m.voxel_size.x)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"{path} is not a readable MRC file ({err})") from None
    return shape, (voxel if voxel > 0 else None)


def read_mrc_rows(path: str | Path, y0: int, y1: int) -> np.ndarray:
    """Rows ``[y0, y1)`` of a ``(Z, Y, X)`` MRC volume, ``(Z, y1 - y0, X)`` in the stored dtype.

    Memory-mapped: only those rows are read, so a volume larger than memory reads by slabs.
    """
    with mrcfile.mmap(str(path), mode="r", permissive=True) as m:
        return np.array(m.data[:, y0:y1, :])


def _mrc_dtype(data: np.ndarray) -> np.ndarray:
    if data.dtype in _WRITE_DTYPES:
        return data
    if data.dtype.kind in "iu" and data.size and 0 <= data.min() and data.max() < 2**16:
        return data.astype(np.uint16)
    if data.dtype.kind in "iu" and data.size and abs(data).max() < 2**24:
        return data.astype(np.float32)  # exact for labels below 2**24
    if data.dtype.kind == "f":
        return data.astype(np.float32)
    raise InputError(f"cannot store {data.dtype} in MRC; convert to float32 first")


def _output_mode(path: Path) -> int:
    """The mode a replaced file keeps, or a new file's: ``0o666`` less the umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_mrc(
    path: str | Path,
    data: np.ndarray,
    voxel_size: float | None = None,
    *,
    overwrite: bool = False,
    stack: bool = False,
) -> None:
    """Write an array as MRC with its voxel size in Å, atomically (temporary file, then rename).

    Parameters
    ----------
    path
        The output file; an existing file is refused unless ``overwrite``.
    data
        `(Z, Y, X)` or `(T, H, W)` array; labels become uint16 (or exact float32).
    voxel_size
        Pixel spacing in Å written to the header (all three axes).
    stack
        A 3-D array is an image stack (a tilt-series: space group 0, ``mz = 1``), not a volume
        (space group 1, ``mz = Z``).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; choose another output or remove it first")
    if not path.parent.is_dir():
        raise InputError(f"output folder {path.parent} does not exist; create it first")
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"output folder {path.parent} is not writable; choose another output")
    array = np.ascontiguousarray(_mrc_dtype(np.asarray(data)))
    mode = _output_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(array)
            if array.ndim == 3 and stack:
                mrc.set_image_stack()
            elif array.ndim == 3:
                mrc.set_volume()
            if voxel_size is not None:
                mrc.voxel_size = float(voxel_size)
        os.chmod(tmp, mode)  # mkstemp makes 0600; an output gets what open() would give it
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
