"""Everything that holds a ``distributed.Client``.

The generate runner, planning, cluster resolution, worker plugins and the one-big-series
Dask graphs.
"""
