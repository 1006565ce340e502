"""faket-dask: realistic, fully labeled synthetic cryo-ET tilt-series at scale (FakET on Dask)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("faket-dask")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
