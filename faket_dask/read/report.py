"""The one-page dataset report of a store: gallery, counts, throughput, realism (PNG or HTML).

A sample gallery, particle counts per class, throughput over time (from the manifest) and
realism figures per modality against the style reference (:mod:`faket_dask.read.metrics`), as
PNG or as HTML (the PNG inlined, plus the numbers as tables).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faket_dask.errors import InputError
from faket_dask.read.access import open_dataset
from faket_dask.read.metrics import realism
from faket_dask.read.preview import (
    LABELS,
    REALISM_MODALITIES,
    crop_to,
    load_reference,
    match_reference,
    pyplot,
    save_figure,
    show,
)

__all__ = ["Throughput", "realism_table", "report", "run_throughput"]


def realism_table(
    store: str | os.PathLike[str], ids: Sequence[int] | None = None, max_samples: int = 8
) -> dict[str, list[dict[str, float]]]:
    """Per modality (NOISY, BASELINE, FAKET...), each sample's distances from its reference.

    Returns ``{modality: [{"sample_id", "spectrum_distance", "histogram_distance"}, ...]}``
    over at most ``max_samples`` complete samples (the first ones).
    """
    ds = open_dataset(store)
    chosen = list(ids if ids is not None else ds.ids)[:max_samples]
    out: dict[str, list[dict[str, float]]] = {}
    refs: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    for sid in chosen:
        tilts = ds.sample(sid, "tilts")
        angles = np.asarray(tilts.tilt_angle.values, dtype=np.float64)
        ref_idx = int((ds.sample_attrs(sid).get("drew") or {}).get("style_reference") or 0)
        try:
            if ref_idx not in refs:
                refs[ref_idx] = load_reference(store, sid)
        except InputError:
            continue
        ref = match_reference(*refs[ref_idx], angles)
        hw = (min(ref.shape[1], tilts.sizes["y"]), min(ref.shape[2], tilts.sizes["x"]))
        ref = crop_to(ref, hw)
        for m in (*REALISM_MODALITIES, "noiseless"):
            if m in tilts.data_vars:
                cand = crop_to(np.asarray(tilts[m].values, dtype=np.float32), hw)
                out.setdefault(m, []).append({"sample_id": sid, **realism(cand, ref)})
    return out


def _particle_counts(ds: Any, ids: Sequence[int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for sid in ids:
        table = ds.particles(sid)
        if "class_name" not in table:
            continue
        for name, n in table["class_name"].value_counts().items():
            counts[str(name)] = counts.get(str(name), 0) + int(n)
    return dict(sorted(counts.items()))


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


def report(
    store: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    max_samples: int = 8,
    dpi: int = 80,
    heldout_table: str | None = None,
) -> Path:
    """Write the one-page dataset report as ``.png`` or ``.html`` (by the output's suffix).

    ``heldout_table``: :func:`faket_dask.read.realism.format_table`'s text, shown as its own
    section of the HTML report (realism on held-out reference tilts).
    """
    out = Path(output)
    if out.suffix.lower() not in (".png", ".html", ".htm"):
        raise InputError(f"report {out}: use a .png or .html output")
    ds = open_dataset(store)
    if not ds.ids:
        raise InputError(f"{store} has no complete samples yet; run `faket-dask generate` first")
    shown = ds.ids[:max_samples]
    counts = _particle_counts(ds, shown)
    table = realism_table(store, shown, max_samples)

    plt = pyplot()
    n_gal = min(len(shown), 6)
    fig = plt.figure(figsize=(12, 7.8))
    grid = fig.add_gridspec(2, max(n_gal, 3) * 2, height_ratios=[1.0, 1.15])
    _gallery(fig, grid, ds, shown[:n_gal], 2 * max(n_gal, 3) // n_gal)
    third = max(n_gal, 3) * 2 // 3
    _counts_panel(fig.add_subplot(grid[1, :third]), counts, len(shown))
    _throughput_panel(
        fig.add_subplot(grid[1, third : 2 * third]), run_throughput(ds.attrs, ds.manifest())
    )
    _realism_panel(fig.add_subplot(grid[1, 2 * third :]), table)
    fig.suptitle(
        f"{Path(store).name}: {len(ds.ids)}/{ds.attrs.get('n_samples')} samples complete",
        fontsize=11,
    )
    fig.tight_layout()
    if out.suffix.lower() == ".png":
        save_figure(fig, out, dpi)
        return out
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_html(store, ds, buf.getvalue(), counts, table, heldout_table))
    return out


def _gallery(fig: Any, grid: Any, ds: Any, ids: Sequence[int], span: int) -> None:
    """The top row: each sample's most processed modality at its nearest-zero tilt."""
    for k, sid in enumerate(ids):
        tilts = ds.sample(sid, "tilts")
        mod = next((m for m in ("styled", "noisy", "noiseless") if m in tilts.data_vars), None)
        ax = fig.add_subplot(grid[0, k * span : (k + 1) * span])
        if mod is None:
            ax.axis("off")
            continue
        t0 = int(np.abs(tilts.tilt_angle.values).argmin())
        show(
            ax,
            np.asarray(tilts[mod].values[t0]),
            f"sample {sid}: {LABELS[mod]} {tilts.tilt_angle.values[t0]:+.0f}°",
        )


def _counts_panel(ax: Any, counts: dict[str, int], n_samples: int) -> None:
    """Particles per class, as horizontal bars."""
    if counts:
        ax.barh(list(counts), list(counts.values()), color="tab:blue")
        ax.invert_yaxis()
    ax.set_title(f"particles per class ({n_samples} samples)", fontsize=10)
    ax.tick_params(labelsize=8)


def _throughput_panel(ax: Any, tp: Throughput) -> None:
    """Samples done over the minutes since the run started."""
    if tp.minutes.size:
        ax.step(tp.minutes, tp.done, where="post", color="tab:green")
        ax.plot(tp.minutes, tp.done, ".", color="tab:green")
        note = "" if tp.source == "recorded" else " (estimated)"
        ax.set_title(f"last run: {tp.done[-1]:.0f} samples, {tp.per_hour:.0f}/h{note}", fontsize=10)
    else:
        ax.set_title("throughput: no manifest rows", fontsize=10)
    ax.set_xlabel("minutes since the run started", fontsize=8)
    ax.set_ylabel("samples done", fontsize=8)
    ax.tick_params(labelsize=8)


def _realism_panel(ax: Any, table: dict[str, list[dict[str, float]]]) -> None:
    """Mean spectrum and histogram distances from the style reference, per modality."""
    mods = [m for m in (*REALISM_MODALITIES, "noiseless") if m in table]
    if mods:
        x = np.arange(len(mods))
        spec = [np.mean([r["spectrum_distance"] for r in table[m]]) for m in mods]
        hist = [np.mean([r["histogram_distance"] for r in table[m]]) for m in mods]
        ax.bar(x - 0.2, spec, 0.4, label="spectrum (decades)", color="tab:purple")
        ax.bar(x + 0.2, hist, 0.4, label="histogram (JS distance)", color="tab:orange")
        ax.set_xticks(x, [LABELS[m] for m in mods], fontsize=8)
        ax.legend(fontsize=7, frameon=False)
    ax.set_title("distance from the style reference (lower: closer)", fontsize=10)
    ax.tick_params(labelsize=8)


def _html(
    store: Any,
    ds: Any,
    png: bytes,
    counts: dict[str, int],
    table: dict[str, list[dict[str, float]]],
    heldout_table: str | None = None,
) -> str:
    esc = html.escape
    heldout = (
        "<h2>Realism on held-out reference tilts</h2><p>Distance to a reference tilt-series "
        "the run never saw, beside d(A, B), the distance between the style reference and it; "
        "ratio 1: as close as two real tilt-series.</p>"
        f"<pre>{esc(heldout_table)}</pre>"
        if heldout_table
        else ""
    )
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in counts.items())
    real = ""
    for m, v in table.items():
        spec = np.mean([r["spectrum_distance"] for r in v])
        hist = np.mean([r["histogram_distance"] for r in v])
        real += (
            f"<tr><td>{LABELS.get(m, m)}</td><td>{spec:.3f}</td><td>{hist:.3f}</td>"
            f"<td>{len(v)}</td></tr>"
        )
    b64 = base64.b64encode(png).decode()
    weights = ds.attrs.get("weights") or {}
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>faket-dask report: {esc(Path(store).name)}</title>"
        "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}"
        "td,th{padding:2px 10px;text-align:left}</style></head><body>"
        f"<h1>{esc(Path(store).name)}</h1>"
        f"<p>{len(ds.ids)} of {ds.attrs.get('n_samples')} samples complete; tool "
        f"{esc(str(ds.attrs.get('tool_version')))}; weights {esc(str(weights.get('name')))}.</p>"
        f"<img alt='report' style='width:100%' src='data:image/png;base64,{b64}'>"
        "<h2>Realism against the style reference</h2><table><tr><th>modality</th>"
        "<th>spectrum distance (decades)</th><th>histogram distance (JS)</th><th>samples</th></tr>"
        f"{real}</table>{heldout}"
        "<h2>Particles per class</h2><table><tr><th>class</th><th>count</th></tr>"
        f"{rows}</table></body></html>\n"
    )
