"""Realism scored on held-out reference tilts, beside the distance between two references.

A style transfer can copy its style input; the score that cannot be gamed compares each
simulated modality with a *held-out* reference B that the run never saw, and prints it beside
``d(A, B)``, the distance between the run's style reference A and B (two real tilt-series of
the same microscope): a ratio of 1 means "as close as two real tilt-series are to each other".

Per tilt angle (each tilt paired with the held-out and the style tilt nearest in angle):

* ``spectrum``: RMS ``log10`` ratio of the radially averaged power spectra, in decades
  (:func:`faket_dask.read.metrics.spectrum_distance`);
* ``histogram``: Jensen-Shannon distance of the intensity histograms
  (:func:`faket_dask.read.metrics.histogram_distance`);
* ``texture``: Jensen-Shannon distance of the histograms of ``log`` local variance in 5×5
  windows (how the contrast is distributed over the image: flat noise vs. objects and edges).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter

from faket_dask.read.access import open_dataset
from faket_dask.read.metrics import histogram_distance, radial_power_spectrum, spectrum_distance
from faket_dask.read.preview import load_reference

__all__ = [
    "METRICS",
    "MODALITIES",
    "RealismRow",
    "format_table",
    "heldout_rows",
    "local_log_variance",
    "store_realism",
    "summarize",
    "tilt_distances",
]

MODALITIES = ("styled", "noisy", "content", "baseline", "noiseless")
"""Modalities scored, in this order, when a sample has them."""

METRICS = ("spectrum", "histogram", "texture")

_WINDOW = 5


def local_log_variance(image: np.ndarray, window: int = _WINDOW) -> np.ndarray:
    """`(H, W)` ``log`` of the variance in ``window``×``window`` boxes (reflect at the edges)."""
    x = np.asarray(image, dtype=np.float64)
    x = (x - x.mean()) / max(float(x.std()), 1e-30)
    mean = uniform_filter(x, window, mode="reflect")
    var = np.maximum(uniform_filter(x * x, window, mode="reflect") - mean * mean, 1e-12)
    return np.log(var)


def tilt_distances(a: np.ndarray, b: np.ndarray, n_bins: int | None = None) -> dict[str, float]:
    """The three distances between two `(H, W)` tilts (sizes may differ; same pixel size).

    ``n_bins`` radial bins (default half the smaller edge of the two).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    k = n_bins or max(1, min(*a.shape, *b.shape) // 2)
    _, pa = radial_power_spectrum(a, k)
    _, pb = radial_power_spectrum(b, k)
    return {
        "spectrum": spectrum_distance(pa, pb),
        "histogram": histogram_distance(a, b),
        "texture": histogram_distance(local_log_variance(a), local_log_variance(b)),
    }


@dataclass(frozen=True)
class RealismRow:
    """One modality at one tilt angle: its distances to the held-out tilt and d(A, B)."""

    modality: str
    angle_deg: float
    distance: dict[str, float]
    reference_distance: dict[str, float]

    def ratio(self, metric: str) -> float:
        """``distance / reference_distance`` (inf when the references are identical)."""
        d, r = self.distance[metric], self.reference_distance[metric]
        return d / r if r > 0 else float("inf")

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {
            "modality": self.modality,
            "angle_deg": self.angle_deg,
            **{f"{m}": self.distance[m] for m in METRICS},
            **{f"{m}_ref": self.reference_distance[m] for m in METRICS},
            **{f"{m}_ratio": self.ratio(m) for m in METRICS},
        }


def _nearest(angles: Sequence[float] | np.ndarray, a: float) -> int:
    return int(np.abs(np.asarray(angles, dtype=np.float64) - a).argmin())


def heldout_rows(
    modalities: Mapping[str, np.ndarray],
    angles_deg: Sequence[float] | np.ndarray,
    heldout: np.ndarray,
    heldout_angles: Sequence[float] | np.ndarray,
    style: np.ndarray,
    style_angles: Sequence[float] | np.ndarray,
) -> list[RealismRow]:
    """Score each modality's tilts against the held-out reference, beside d(style, held-out).

    Parameters
    ----------
    modalities
        ``{name: (T, H, W)}`` simulated tilts of one sample.
    angles_deg
        `(T,)` their angles.
    heldout, heldout_angles
        `(T_B, H_B, W_B)` the held-out reference B and its angles.
    style, style_angles
        `(T_A, H_A, W_A)` the run's style reference A and its angles.

    Returns
    -------
    list[RealismRow]
        One row per modality and tilt, in the modalities' order then by angle.
    """
    angles = np.asarray(angles_deg, dtype=np.float64)
    ref_d: dict[int, dict[str, float]] = {}
    rows = []
    for t, a in enumerate(angles):
        ib = _nearest(heldout_angles, a)
        if ib not in ref_d:
            ia = _nearest(style_angles, float(np.asarray(heldout_angles)[ib]))
            ref_d[ib] = tilt_distances(style[ia], heldout[ib])
        for name, stack in modalities.items():
            d = tilt_distances(stack[t], heldout[ib])
            rows.append(RealismRow(name, float(a), d, ref_d[ib]))
    order = {m: i for i, m in enumerate(modalities)}
    return sorted(rows, key=lambda r: (order[r.modality], r.angle_deg))


def store_realism(
    store: str | os.PathLike[str],
    heldout: np.ndarray,
    heldout_angles: Sequence[float] | np.ndarray,
    max_samples: int = 4,
    modalities: Sequence[str] = MODALITIES,
) -> list[RealismRow]:
    """:func:`heldout_rows` for the first ``max_samples`` complete samples of a store.

    The style reference A of each sample is the one recorded in the store.
    """
    ds = open_dataset(store)
    rows: list[RealismRow] = []
    for sid in list(ds.ids)[:max_samples]:
        tilts = ds.sample(sid, "tilts")
        angles = np.asarray(tilts.tilt_angle.values, dtype=np.float64)
        style, style_angles = load_reference(store, sid)
        if style_angles is None:
            style_angles = angles[: style.shape[0]]
        stacks = {
            m: np.asarray(tilts[m].values, dtype=np.float32)
            for m in modalities
            if m in tilts.data_vars
        }
        rows += heldout_rows(stacks, angles, heldout, heldout_angles, style, style_angles)
    return rows


def summarize(rows: Sequence[RealismRow]) -> list[dict]:
    """Mean over samples per ``(modality, angle)``: distances, d(A, B) and their ratios."""
    groups: dict[tuple[str, float], list[RealismRow]] = {}
    for r in rows:
        groups.setdefault((r.modality, round(r.angle_deg, 3)), []).append(r)
    out = []
    for (mod, angle), rs in groups.items():
        row: dict = {"modality": mod, "angle_deg": angle, "n_samples": len(rs)}
        for m in METRICS:
            d = float(np.mean([r.distance[m] for r in rs]))
            ref = float(np.mean([r.reference_distance[m] for r in rs]))
            row.update({m: d, f"{m}_ref": ref, f"{m}_ratio": d / ref if ref > 0 else float("inf")})
        out.append(row)
    return out


def format_table(summary: Sequence[Mapping]) -> str:
    """A plain-text table: per modality and angle, each distance, d(A, B) and the ratio."""
    head = f"{'modality':<10} {'angle':>6}"
    for m in METRICS:
        head += f"  {m + ' d':>11} {'d(A,B)':>7} {'ratio':>6}"
    lines = [head, "-" * len(head)]
    for r in summary:
        line = f"{r['modality']:<10} {r['angle_deg']:>6.1f}"
        for m in METRICS:
            line += f"  {r[m]:>11.3f} {r[m + '_ref']:>7.3f} {r[m + '_ratio']:>5.2f}x"
        lines.append(line)
    return "\n".join(lines)
