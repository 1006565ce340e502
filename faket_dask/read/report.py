"""The one-page dataset report of a store: gallery, counts, throughput, realism (PNG or HTML).

A sample gallery, particle counts per class, throughput over time (from the manifest) and
realism figures per modality against the style reference (:mod:`faket_dask.read.metrics`), as
PNG or as HTML (the PNG inlined, plus the numbers as tables).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
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
from faket_dask.read.report_html import html_report
from faket_dask.read.throughput import Throughput, run_throughput

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
                row = {"sample_id": sid, "style_reference": ref_idx, **realism(cand, ref)}
                out.setdefault(m, []).append(row)
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
    plt.close(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html_report(store, ds, shown, table, dpi, heldout_table))
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


