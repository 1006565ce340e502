"""Separate virtual environments for third-party readers whose dependencies clash with ours.

``ome-zarr`` pins an older pydantic and ``copick`` needs zarr < 3, so they are installed into
their own venvs (cached under the system temp folder across sessions) and run as subprocesses.
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

INSTALL_TIMEOUT_S = 180


def venv_python(name: str, packages: list[str], check_import: str) -> Path:
    """The python of a venv holding ``packages``; skips the test when it cannot be made in time."""
    root = Path(tempfile.gettempdir()) / "faket-dask-test-venvs" / name
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test processes build the venv once
        try:
            return _make(root, packages, check_import)
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(lock, fcntl.LOCK_UN)


def _make(root: Path, packages: list[str], check_import: str) -> Path:
    python = root / "bin" / "python"
    if python.exists() and _imports(python, check_import):
        return python
    t0 = time.monotonic()
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(root)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        left = INSTALL_TIMEOUT_S - (time.monotonic() - t0)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *packages],
            check=True,
            capture_output=True,
            timeout=max(1.0, left),
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"installing {packages} into a venv took over {INSTALL_TIMEOUT_S} s")
    except subprocess.CalledProcessError as err:
        tail = (err.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        pytest.skip(f"could not install {packages} into a venv (no PyPI?): {tail}")
    if not _imports(python, check_import):
        pytest.skip(f"{check_import} does not import in its venv after installing {packages}")
    return python


def _imports(python: Path, module: str) -> bool:
    res = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, timeout=120)
    return res.returncode == 0


def run_script(python: Path, script: str, *args: str, timeout: float = 120) -> str:
    """Run ``script`` with the venv's python; return stdout (fail with stderr on error)."""
    res = subprocess.run(
        [str(python), "-c", script, *args], capture_output=True, text=True, timeout=timeout
    )
    assert res.returncode == 0, f"stdout:\n{res.stdout}\nstderr:\n{res.stderr[-3000:]}"
    return res.stdout
