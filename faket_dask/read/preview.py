"""Pictures of a store: a per-sample preview and a one-page dataset report (matplotlib, Agg).

* :func:`preview`: NOISELESS, NOISY (and BASELINE, when stored), FAKET (``styled``) and the
  style reference side by side at three tilts (lowest, nearest zero, highest angle), with the
  radially averaged power spectrum of each at that tilt.
* :func:`report`: a sample gallery, particle counts per class, throughput over time (from the
  manifest) and realism figures per modality against the style reference
  (:mod:`faket_dask.read.metrics`), as PNG or as HTML (the PNG inlined, plus the numbers as tables).

Numerics live in :mod:`faket_dask.read.metrics`; this module only reads the store and draws.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faket_dask.errors import InputError

__all__ = [
    "PREVIEW_MODALITIES",
    "REALISM_MODALITIES",
    "load_reference",
    "preview",
    "realism_table",
    "report",
    "tilt_indices",
]

PREVIEW_MODALITIES = ("noiseless", "noisy", "baseline", "styled")
REALISM_MODALITIES = ("noisy", "baseline", "styled")
_LABEL = {
    "noiseless": "NOISELESS",
    "noisy": "NOISY",
    "baseline": "BASELINE",
    "content": "CONTENT",
    "styled": "FAKET",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def tilt_indices(angles_deg: Sequence[float]) -> list[int]:
    """Indices of the lowest, nearest-zero and highest tilt angle (duplicates kept in order)."""
    a = np.asarray(angles_deg, dtype=np.float64)
    return [int(a.argmin()), int(np.abs(a).argmin()), int(a.argmax())]


def load_reference(
    store: str | os.PathLike[str], sample_id: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """The style reference that styled a sample: ``(data (T, H, W), angles (T,) deg or None)``.

    Read from the path recorded in the store; the built-in demo reference is made again
    (deterministically) when its copy is gone.
    """
    from faket_dask.io import read_tilt_series
    from faket_dask.io import store as st

    attrs = st.read_store_attrs(store)
    refs = attrs.get("style_references") or []
    sample = st.read_sample_attrs(store, sample_id) or {}
    idx = int((sample.get("drew") or {}).get("style_reference") or 0)
    if not refs:
        raise InputError(f"{store} records no style reference (style transfer was off)")
    rec = refs[min(idx, len(refs) - 1)]
    path = Path(str(rec.get("path", "")))
    if path.exists():
        series = read_tilt_series(path)
    elif rec.get("spec") == "demo":
        from faket_dask.config import config_from_dict, union_angles
        from faket_dask.demo import DEMO_REFERENCE_SEED
        from faket_dask.stages.reference import demo_reference

        cfg = config_from_dict(attrs["config"], source=f"store {store}")
        series = demo_reference(
            tuple(cfg.tilts.shape), union_angles(cfg), cfg.tilts.pixel_spacing, DEMO_REFERENCE_SEED
        )
    else:
        raise InputError(f"style reference {path} (recorded in {store}) is gone; restore it")
    data = np.asarray(series.data, dtype=np.float32)
    angles = None if series.angles_deg is None else np.asarray(series.angles_deg, np.float64)
    return data, angles


def _match_reference(
    ref: np.ndarray, ref_angles: np.ndarray | None, angles: np.ndarray
) -> np.ndarray:
    """The reference tilt used for each sample tilt: the nearest angle, else by index."""
    if ref_angles is not None and ref_angles.size == ref.shape[0]:
        idx = np.abs(ref_angles[None, :] - angles[:, None]).argmin(axis=1)
    else:
        idx = np.round(np.linspace(0, ref.shape[0] - 1, angles.size)).astype(int)
    return ref[idx]


def _crop_to(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = a.shape[-2:]
    y0, x0 = (h - shape[0]) // 2, (w - shape[1]) // 2
    return a[..., y0 : y0 + shape[0], x0 : x0 + shape[1]]


def _show(ax: Any, img: np.ndarray, title: str | None = None) -> None:
    lo, hi = np.nanpercentile(img, [1, 99])
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def _unit(img: np.ndarray) -> np.ndarray:
    x = np.asarray(img, dtype=np.float64)
    s = x.std()
    return (x - x.mean()) / (s if s > 0 else 1.0)


def _save(fig: Any, output: Path, dpi: int) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=dpi, metadata={"Software": "faket-dask"})
    _pyplot().close(fig)


def preview(
    store: str | os.PathLike[str],
    sample_id: int,
    output: str | os.PathLike[str],
    *,
    dpi: int = 80,
) -> Path:
    """Write a PNG of one sample's modalities and style reference at three tilts.

    Columns: NOISELESS, NOISY, (BASELINE,) FAKET, the style reference's matching tilt, and the
    radially averaged power spectra of those images (each standardised to unit variance, so
    the curves compare shapes; x in 1/Å). Rows: the lowest, nearest-zero and highest tilt.
    """
    from faket_dask.read.access import open_dataset
    from faket_dask.read.metrics import radial_power_spectrum

    ds = open_dataset(store)
    tilts = ds.sample(sample_id, "tilts")
    mods = [m for m in PREVIEW_MODALITIES if m in tilts.data_vars]
    if not mods:
        raise InputError(f"sample {sample_id} stores no tilt modality to preview")
    angles = np.asarray(tilts.tilt_angle.values, dtype=np.float64)
    rows = tilt_indices(angles)
    ps = float(tilts.attrs.get("pixel_spacing") or 1.0)
    try:
        ref, ref_angles = load_reference(store, sample_id)
        ref_rows = _crop_to(
            _match_reference(ref, ref_angles, angles[rows]), tilts[mods[0]].shape[1:]
        )
    except InputError:
        ref_rows = None
    images = {m: np.asarray(tilts[m].values[rows], dtype=np.float32) for m in mods}
    if ref_rows is not None:
        images["reference"] = ref_rows
    names = list(images)
    plt = _pyplot()
    ncol = len(names) + 1
    fig, axes = plt.subplots(3, ncol, figsize=(2.1 * ncol + 0.8, 6.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for r, t in enumerate(rows):
        for c, name in enumerate(names):
            title = _LABEL.get(name, "style reference") if r == 0 else None
            _show(axes[r, c], images[name][r], title)
        axes[r, 0].set_ylabel(f"tilt {angles[t]:+.0f}°", fontsize=9)
        ax = axes[r, -1]
        for c, name in enumerate(names):
            freq, power = radial_power_spectrum(_unit(images[name][r]))
            ax.semilogy(
                freq[1:] / ps,
                power[1:],
                lw=1.2,
                color=colors[c % len(colors)],
                label=_LABEL.get(name, "reference"),
            )
        ax.tick_params(labelsize=7)
        ax.set_xlabel("spatial frequency (1/Å)", fontsize=7)
        if r == 0:
            ax.set_title("radial power spectra", fontsize=9)
            ax.legend(fontsize=6, frameon=False)
    weights = (ds.attrs.get("weights") or {}).get("name")
    fig.suptitle(
        f"{Path(store).name}  sample {sample_id}  ({len(angles)} tilts, {ps:g} Å/px"
        + (f", weights: {weights}" if weights else "")
        + ")",
        fontsize=10,
    )
    fig.tight_layout()
    out = Path(output)
    _save(fig, out, dpi)
    return out


def realism_table(
    store: str | os.PathLike[str], ids: Sequence[int] | None = None, max_samples: int = 8
) -> dict[str, list[dict[str, float]]]:
    """Per modality (NOISY, BASELINE, FAKET...), each sample's distances from its reference.

    Returns ``{modality: [{"sample_id", "spectrum_distance", "histogram_distance"}, ...]}``
    over at most ``max_samples`` complete samples (the first ones).
    """
    from faket_dask.read.access import open_dataset
    from faket_dask.read.metrics import realism

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
        ref = _match_reference(*refs[ref_idx], angles)
        hw = (min(ref.shape[1], tilts.sizes["y"]), min(ref.shape[2], tilts.sizes["x"]))
        ref = _crop_to(ref, hw)
        for m in (*REALISM_MODALITIES, "noiseless"):
            if m in tilts.data_vars:
                cand = _crop_to(np.asarray(tilts[m].values, dtype=np.float32), hw)
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


def _throughput(rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    times = []
    for r in rows:
        if r.get("status") == "ok" and r.get("finished_at") and not r.get("reused"):
            try:
                times.append(_dt.datetime.fromisoformat(str(r["finished_at"])).timestamp())
            except ValueError:
                continue
    t = np.sort(np.asarray(times, dtype=np.float64))
    if t.size == 0:
        return t, t
    durations = [
        float((r.get("timings") or {}).get("total", 0.0)) for r in rows if r.get("status") == "ok"
    ]
    start = t[0] - (max(durations) if durations else 0.0)
    return (t - start) / 60.0, np.arange(1, t.size + 1, dtype=np.float64)


def report(
    store: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    max_samples: int = 8,
    dpi: int = 80,
) -> Path:
    """Write the one-page dataset report as ``.png`` or ``.html`` (by the output's suffix)."""
    from faket_dask.read.access import open_dataset

    out = Path(output)
    if out.suffix.lower() not in (".png", ".html", ".htm"):
        raise InputError(f"report {out}: use a .png or .html output")
    ds = open_dataset(store)
    if not ds.ids:
        raise InputError(f"{store} has no complete samples yet; run `faket-dask generate` first")
    shown = ds.ids[:max_samples]
    counts = _particle_counts(ds, shown)
    minutes, done = _throughput(ds.manifest())
    table = realism_table(store, shown, max_samples)

    plt = _pyplot()
    n_gal = min(len(shown), 6)
    fig = plt.figure(figsize=(12, 7.8))
    grid = fig.add_gridspec(2, max(n_gal, 3) * 2, height_ratios=[1.0, 1.15])
    span = 2 * max(n_gal, 3) // n_gal
    for k, sid in enumerate(shown[:n_gal]):
        tilts = ds.sample(sid, "tilts")
        mod = next((m for m in ("styled", "noisy", "noiseless") if m in tilts.data_vars), None)
        ax = fig.add_subplot(grid[0, k * span : (k + 1) * span])
        if mod is None:
            ax.axis("off")
            continue
        t0 = int(np.abs(tilts.tilt_angle.values).argmin())
        _show(
            ax,
            np.asarray(tilts[mod].values[t0]),
            f"sample {sid}: {_LABEL[mod]} {tilts.tilt_angle.values[t0]:+.0f}°",
        )
    third = max(n_gal, 3) * 2 // 3
    ax = fig.add_subplot(grid[1, :third])
    if counts:
        ax.barh(list(counts), list(counts.values()), color="tab:blue")
        ax.invert_yaxis()
    ax.set_title(f"particles per class ({len(shown)} samples)", fontsize=10)
    ax.tick_params(labelsize=8)
    ax = fig.add_subplot(grid[1, third : 2 * third])
    if minutes.size:
        ax.step(minutes, done, where="post", color="tab:green")
        ax.plot(minutes, done, ".", color="tab:green")
        rate = done[-1] / max(minutes[-1], 1e-9) * 60.0
        ax.set_title(f"throughput: {done[-1]:.0f} samples, {rate:.0f}/h", fontsize=10)
    else:
        ax.set_title("throughput: no manifest rows", fontsize=10)
    ax.set_xlabel("minutes since the first sample started", fontsize=8)
    ax.set_ylabel("samples done", fontsize=8)
    ax.tick_params(labelsize=8)
    ax = fig.add_subplot(grid[1, 2 * third :])
    mods = [m for m in (*REALISM_MODALITIES, "noiseless") if m in table]
    if mods:
        x = np.arange(len(mods))
        spec = [np.mean([r["spectrum_distance"] for r in table[m]]) for m in mods]
        hist = [np.mean([r["histogram_distance"] for r in table[m]]) for m in mods]
        ax.bar(x - 0.2, spec, 0.4, label="spectrum (decades)", color="tab:purple")
        ax.bar(x + 0.2, hist, 0.4, label="histogram (JS distance)", color="tab:orange")
        ax.set_xticks(x, [_LABEL[m] for m in mods], fontsize=8)
        ax.legend(fontsize=7, frameon=False)
    ax.set_title("distance from the style reference (lower: closer)", fontsize=10)
    ax.tick_params(labelsize=8)
    fig.suptitle(
        f"{Path(store).name}: {len(ds.ids)}/{ds.attrs.get('n_samples')} samples complete",
        fontsize=11,
    )
    fig.tight_layout()
    if out.suffix.lower() == ".png":
        _save(fig, out, dpi)
        return out
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_html(store, ds, buf.getvalue(), counts, table))
    return out


def _html(
    store: Any,
    ds: Any,
    png: bytes,
    counts: dict[str, int],
    table: dict[str, list[dict[str, float]]],
) -> str:
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in counts.items())
    real = ""
    for m, v in table.items():
        spec = np.mean([r["spectrum_distance"] for r in v])
        hist = np.mean([r["histogram_distance"] for r in v])
        real += (
            f"<tr><td>{_LABEL.get(m, m)}</td><td>{spec:.3f}</td><td>{hist:.3f}</td>"
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
        f"{real}</table><h2>Particles per class</h2><table><tr><th>class</th><th>count</th></tr>"
        f"{rows}</table></body></html>\n"
    )
