"""``python -m faket_dask_cli``: the same app as the ``faket-dask`` command."""

from .main import main

main()
