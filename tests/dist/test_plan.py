"""Planning checks made with the client: the store must be visible from every worker."""

from __future__ import annotations

import pytest

from faket_dask.dist import plan

pytestmark = pytest.mark.timeout(60)


def test_shared_filesystem_check(tmp_path, dask_client):
    plan.check_shared_filesystem(dask_client, tmp_path)
    assert not list(tmp_path.iterdir())  # the token file is removed
    assert plan._read_token(str(tmp_path / "nothing"), "t") is False
