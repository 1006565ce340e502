"""The ``weights`` verbs as subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _stage_cli import run_cli

pytestmark = pytest.mark.timeout(240)


def test_weights_info_reports_the_cache(tmp_path: Path) -> None:
    proc = run_cli("weights", "info", "--cache-dir", tmp_path)
    info = json.loads(proc.stdout)
    assert str(tmp_path) in json.dumps(info)
