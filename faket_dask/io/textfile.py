"""Reading a small UTF-8 text file (a noise model, a calibration) with one-line errors."""

from __future__ import annotations

from pathlib import Path

from faket_dask.errors import InputError

__all__ = ["read_text_file"]


def read_text_file(path: Path, what: str) -> str:
    """The text of ``path``; ``what`` names the file in errors (``"noise model file"``).

    Raises
    ------
    InputError
        The file does not exist, cannot be read, or is not UTF-8.
    """
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {what} {path}: {e}") from None
