"""Running the real CLI from the tests: in-process (fast) or as a subprocess."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from collections.abc import Mapping

CLI = [sys.executable, "-m", "faket_dask_cli.main"]


def run_cli(*args: object, subprocess_: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the CLI's ``main`` in-process (fast), or as a real subprocess with ``subprocess_``."""
    argv = [str(a) for a in args]
    if subprocess_:
        return subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=150)
    from faket_dask_cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def run_cli_checked(
    *args: object,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    timeout: float = 150,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a subprocess; with ``check``, a non-zero exit fails with its stderr."""
    cmd = [*CLI, *map(str, args)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=None if env is None else dict(env)
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def assert_one_line_exit_2(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    """A user error: exit code 2, one stderr line that contains ``needle``, no traceback."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
