"""Plain JSON values from what the generator records (NumPy scalars and arrays, paths, ...).

The one home of the conversion used for store attributes, manifest rows, sample summaries and
noise-model provenance.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["json_default", "jsonable"]


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)``: arrays become lists, scalars plain values, the rest ``str``.

    NumPy arrays and scalars, and anything else with ``tolist`` (a torch tensor) or ``item``,
    keep their values; other objects (paths, enums...) are written as their ``str``.
    """
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON types (a round trip through :func:`json.dumps`)."""
    return json.loads(json.dumps(obj, default=json_default))
