"""The builder's compiled kernels: numba, no Python objects, the GIL released, cached on disk.

A kernel does the per-voxel loops that NumPy can only do with large temporaries (a rotation's
eight-corner interpolation, a placement test that stops at its first taken cell, a scatter of
voxel lists into a slab). It releases the GIL (``nogil``), so the builder runs kernels in
threads; it never uses numba's own thread pool (``parallel``), which must not be entered from
several threads at once (Dask workers run tasks in threads). The compiled code is cached next to
the module (or in ``NUMBA_CACHE_DIR``), so a process pays the compilation once per machine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

__all__ = ["kernel"]

F = TypeVar("F", bound=Callable[..., Any])


def kernel(fn: F) -> F:
    """Compile ``fn`` with numba in nopython mode, releasing the GIL, cached on disk."""
    return cast(F, numba.njit(cache=True, nogil=True)(fn))
