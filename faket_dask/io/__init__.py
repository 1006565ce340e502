"""Reading and writing tilt-series, volumes and stores (MRC and Zarr v3)."""

from faket_dask.io.mrc import read_mrc, write_mrc
from faket_dask.io.series import (
    TiltSeries,
    Volume,
    read_tilt_series,
    read_volume,
    write_tilt_series,
    write_volume,
)

__all__ = [
    "TiltSeries",
    "Volume",
    "read_mrc",
    "read_tilt_series",
    "read_volume",
    "write_mrc",
    "write_tilt_series",
    "write_volume",
]
