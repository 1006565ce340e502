"""``python -m faket_dask_cli``: the same app as the ``faket-dask`` command."""

from faket_dask_cli.main import main

main()
