"""Shared test fixtures: one real 2-worker Dask cluster per test session (created on first use).

Tests run offline (``FAKET_DASK_OFFLINE=1``): nothing downloads weights; use ``random`` weights
or a locally made state dict.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# the shared helpers (_cli, _generate_helpers, ...) live here; tests in subfolders import them
sys.path.insert(0, str(Path(__file__).parent))

os.environ.setdefault("FAKET_DASK_OFFLINE", "1")
# as importing faket_dask does: test modules may import torch first, and the CLI subprocesses
# they compare with set it, so MKL must take its reproducible paths here too
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")


@pytest.fixture(scope="session")
def dask_cluster():
    """A ``LocalCluster`` of 2 single-threaded worker processes, shared by the whole session."""
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=40,
    )
    yield cluster
    cluster.close()


@pytest.fixture
def dask_client(dask_cluster):
    """A client of the session cluster (closed after the test; the cluster lives on)."""
    from distributed import Client

    with Client(dask_cluster.scheduler_address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        yield client
