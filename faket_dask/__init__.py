"""faket-dask: realistic, fully labeled synthetic cryo-ET tilt-series at scale (FakET on Dask)."""

import os
from importlib.metadata import PackageNotFoundError, version

# MKL picks GEMM code paths at run time (and, under load, differently from run to run), so
# the same CPU computation could round differently in two processes; FakET's one-step update
# amplifies that. Strict conditional numerical reproducibility costs nothing measurable here.
# It must be set before MKL's first call, which importing this package precedes.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

try:
    __version__ = version("faket-dask")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "open_dataset"]


def __getattr__(name: str) -> object:
    # lazy: ``import faket_dask`` stays light (no xarray/zarr until a dataset is opened)
    if name == "open_dataset":
        from faket_dask.read.access import open_dataset

        return open_dataset
    raise AttributeError(f"module 'faket_dask' has no attribute {name!r}")
