"""Error types that map onto the CLI's exit codes.

Library code raises these with a one-line message that names the problem and the fix;
the CLI prints the message (no traceback) and exits with ``exit_code``.
"""

from __future__ import annotations


class FaketError(Exception):
    """Base class of all errors that the user should see as one clear line."""

    exit_code: int = 1


class InputError(FaketError, ValueError):
    """Bad user input: a file, an option or a config value (exit code 2)."""

    exit_code = 2


class ClusterError(FaketError, ConnectionError):
    """The Dask cluster cannot be reached or has no workers (exit code 3)."""

    exit_code = 3


class SamplesFailedError(FaketError):
    """Some samples failed after their retries (exit code 1)."""

    exit_code = 1
