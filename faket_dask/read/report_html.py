"""The HTML dataset report: one section per sample group, particles, realism, throughput.

Samples are grouped by what they drew (style reference, noise model, tilt scheme, particle
mix; one group when nothing is randomised). Each group's section has a gallery (the most
processed modality at the nearest-zero tilt, class mask outlined) and the realism figures of
its samples against their style reference. The page also has the particle-table summary per
class and the last run's throughput as ``generate`` recorded it.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faket_dask.errors import InputError
from faket_dask.read.labels import (
    add_legend,
    add_scale_bar,
    class_colors,
    draw_outlines,
    projected_class_map,
)
from faket_dask.read.preview import LABELS, pyplot, show
from faket_dask.read.throughput import run_throughput

__all__ = ["html_report", "sample_groups"]

STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 1em}"
    "td,th{padding:2px 10px;text-align:left}th{border-bottom:1px solid #888}"
    "section{border-top:2px solid #ccc;margin-top:1.5em}img{max-width:100%}"
)


def sample_groups(ds: Any, ids: Sequence[int]) -> dict[str, list[int]]:
    """``{group label: sample ids}``: samples styled by the same style reference share a group.

    (One group when the dataset has one reference; the other draws, noise model, angles and
    particle mix, are listed per sample in each section.)
    """
    refs = ds.attrs.get("style_references") or []
    groups: dict[str, list[int]] = {}
    for sid in ids:
        k = (ds.sample_attrs(sid).get("drew") or {}).get("style_reference")
        if k is None:
            label = "all samples (no style transfer)"
        else:
            spec = refs[k].get("spec") if k < len(refs) else "?"
            label = f"style reference {k}: {spec}"
        groups.setdefault(label, []).append(sid)
    return groups


def _draws(ds: Any, ids: Sequence[int]) -> str:
    """A table of what each sample drew besides its style reference (empty if nothing varies)."""
    keys = ("noise_model", "angles_spec", "particle_mix", "snr")
    rows = []
    for sid in ids:
        drew = ds.sample_attrs(sid).get("drew") or {}
        vals = [drew.get(k, "") for k in keys]
        rows.append([sid, *(f"{v:.3g}" if isinstance(v, float) else v for v in vals)])
    if all(len({str(r[i]) for r in rows}) <= 1 for i in range(1, len(keys) + 1)) and len(rows) > 1:
        return ""
    return _table(["sample", "noise model", "angles", "particle mix", "SNR"], rows)


def _png(fig: Any, dpi: int) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _gallery(ds: Any, ids: Sequence[int], dpi: int) -> str:
    """Base64 PNG: each sample at its nearest-zero tilt, class mask outlined, and a legend."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(ids) + 1, figsize=(2.4 * (len(ids) + 1), 2.7), squeeze=False)
    classes: dict[int, str] = {}
    for ax, sid in zip(axes[0], ids, strict=False):
        tilts = ds.sample(sid, "tilts")
        mod = next((m for m in ("styled", "noisy", "noiseless") if m in tilts.data_vars), None)
        if mod is None:
            ax.axis("off")
            continue
        angles = np.asarray(tilts.tilt_angle.values, dtype=np.float64)
        t0 = int(np.abs(angles).argmin())
        img = np.asarray(tilts[mod].values[t0], dtype=np.float32)
        show(ax, img, f"sample {sid}: {LABELS[mod]} {angles[t0]:+.0f}°")
        add_scale_bar(ax, img.shape[1], img.shape[0], float(tilts.attrs.get("pixel_spacing", 1)))
        try:
            vol = ds.sample(sid, "volume")
        except InputError:
            continue
        if "class_mask" in vol.data_vars:
            classes = {int(k): str(v) for k, v in (vol.attrs.get("classes") or {}).items()}
            mask = np.asarray(vol["class_mask"].values)
            labels = projected_class_map(mask, [angles[t0]], img.shape[1], sorted(classes))[0]
            draw_outlines(ax, labels, class_colors(classes))
    add_legend(axes[0, -1], classes, class_colors(classes))
    fig.tight_layout()
    return _png(fig, dpi)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _realism_rows(table: dict[str, list[dict[str, Any]]], ids: Sequence[int]) -> list[list[Any]]:
    """Per style reference and modality: mean distances over the group's samples."""
    rows = []
    for m, entries in table.items():
        by_ref: dict[int, list[dict[str, Any]]] = {}
        for e in entries:
            if e["sample_id"] in ids:
                by_ref.setdefault(int(e.get("style_reference", 0)), []).append(e)
        for ref, es in sorted(by_ref.items()):
            spec = np.mean([e["spectrum_distance"] for e in es])
            hist = np.mean([e["histogram_distance"] for e in es])
            rows.append([ref, LABELS.get(m, m), f"{spec:.3f}", f"{hist:.3f}", len(es)])
    return rows


def _particle_rows(ds: Any, ids: Sequence[int]) -> list[list[Any]]:
    """Per class: particles in all, per sample (mean, min, max) over ``ids``."""
    per: dict[str, list[int]] = {}
    for k, sid in enumerate(ids):
        table = ds.particles(sid)
        names = table["class_name"].value_counts() if "class_name" in table else {}
        for name, n in dict(names).items():
            per.setdefault(str(name), [0] * len(ids))[k] = int(n)
    return [
        [name, sum(v), f"{np.mean(v):.1f}", min(v), max(v)] for name, v in sorted(per.items())
    ]


def _throughput_html(ds: Any) -> str:
    tp = run_throughput(ds.attrs, ds.manifest())
    last = ds.attrs.get("last_run") or {}
    if tp.source != "recorded":
        return f"<p>{tp.per_hour:.0f} samples/h (estimated: this store has no recorded run).</p>"
    return (
        f"<p>Last run {html.escape(str(last.get('run_id')))}: {last.get('done')} samples "
        f"computed, {last.get('skipped')} skipped, {last.get('failed')} failed in "
        f"{float(last.get('elapsed_s') or 0):.1f} s from {html.escape(str(last.get('started_at')))}"
        f": <b>{tp.per_hour:.0f} samples/h</b> (the figure generate printed).</p>"
    )


def html_report(
    store: Any,
    ds: Any,
    ids: Sequence[int],
    table: dict[str, list[dict[str, Any]]],
    dpi: int,
    heldout_table: str | None = None,
) -> str:
    """The HTML page for ``ids`` of a dataset (``table``: :func:`realism_table` rows).

    ``heldout_table``: the realism table on held-out reference tilts, as text, if any.
    """
    esc = html.escape
    weights = ds.attrs.get("weights") or {}
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>faket-dask report: "
        f"{esc(Path(store).name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{esc(Path(store).name)}</h1><p>{len(ds.ids)} of {ds.attrs.get('n_samples')} "
        f"samples complete; tool {esc(str(ds.attrs.get('tool_version')))}; weights "
        f"{esc(str(weights.get('name')))}.</p><h2>Throughput</h2>{_throughput_html(ds)}",
        "<h2>Particles per class</h2>",
        _table(["class", "particles", "per sample (mean)", "min", "max"], _particle_rows(ds, ids)),
    ]
    header = ["style reference", "modality", "spectrum distance (decades)",
              "histogram distance (JS)", "samples"]
    for label, members in sample_groups(ds, ids).items():
        parts.append(f"<section><h2>{esc(label)}</h2><p>samples {esc(str(members))}</p>")
        parts.append(_draws(ds, members))
        png = _gallery(ds, members[:6], dpi)
        parts.append(f"<img alt='gallery' src='data:image/png;base64,{png}'>")
        parts.append("<h3>Realism against the style reference (lower: closer)</h3>")
        parts.append(_table(header, _realism_rows(table, members)) + "</section>")
    if heldout_table:
        parts.append(
            "<h2>Realism on held-out reference tilts</h2><p>Distance to a reference tilt-series "
            "the run never saw, beside d(A, B), the distance between the style reference and "
            f"it; ratio 1: as close as two real tilt-series.</p><pre>{esc(heldout_table)}</pre>"
        )
    parts.append("</body></html>\n")
    return "".join(parts)
