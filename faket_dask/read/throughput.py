"""The throughput of a store's last run, from the times the run recorded.

``generate`` records its start, finish, wall time and computed samples in the root attrs
(``last_run``); the report shows the same samples/hour as ``generate``'s summary.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Throughput", "run_throughput"]


@dataclass(frozen=True)
class Throughput:
    """Samples finished over a run's time, from the times the run recorded.

    Attributes
    ----------
    minutes
        `(n,)` minutes from the run's start to each sample's finish, sorted.
    done
        `(n,)` samples finished by then (1, 2, ...).
    per_hour
        Samples per hour: the run's computed samples over its wall time, the figure
        ``generate``'s summary prints (0 when unknown).
    source
        ``"recorded"`` (the last run's start and wall time) or ``"estimated"`` (an older store
        without them: the first sample's finish minus the longest sample's duration).
    """

    minutes: np.ndarray
    done: np.ndarray
    per_hour: float
    source: str


def _timestamp(text: Any) -> float | None:
    try:
        return _dt.datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


def run_throughput(attrs: dict[str, Any], rows: Sequence[dict[str, Any]]) -> Throughput:
    """The throughput of the store's last run (``attrs``: root attrs; ``rows``: the manifest)."""
    last = attrs.get("last_run") or {}
    start = _timestamp(last.get("started_at")) if last.get("started_at") else None
    ok = [
        r for r in rows if r.get("status") == "ok" and r.get("finished_at") and not r.get("reused")
    ]
    if start is not None:
        ok = [r for r in ok if r.get("run_id") in (None, last.get("run_id"))]
    t = np.sort(np.asarray([x for r in ok if (x := _timestamp(r["finished_at"]))], dtype=float))
    done = np.arange(1, t.size + 1, dtype=np.float64)
    if start is not None:
        elapsed = float(last.get("elapsed_s") or 0.0)
        rate = 3600.0 * int(last.get("done") or 0) / elapsed if elapsed > 0 else 0.0
        return Throughput((t - start) / 60.0, done, rate, "recorded")
    if t.size == 0:
        return Throughput(t, t, 0.0, "estimated")
    longest = max(float((r.get("timings") or {}).get("total", 0.0)) for r in ok)
    minutes = (t - (t[0] - longest)) / 60.0
    return Throughput(minutes, done, done[-1] / max(minutes[-1], 1e-9) * 60.0, "estimated")
