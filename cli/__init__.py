"""The faket-dask command-line interface (installed as ``faket_dask_cli``)."""
