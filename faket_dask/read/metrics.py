"""Realism numbers: radially averaged power spectra and intensity-histogram distances.

They compare a simulated modality (NOISY, BASELINE, FAKET...) with the style reference, so a
user can see what the style transfer changed and tune SNR and weights:

* :func:`spectrum_distance`: RMS difference of ``log10`` radially averaged power, in decades
  (0: identical spectra; 1: a factor 10 off on average);
* :func:`histogram_distance`: Jensen-Shannon distance (base 2, in [0, 1]) between intensity
  histograms on shared bins.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "histogram_distance",
    "radial_power_spectrum",
    "realism",
    "spectrum_distance",
]


def radial_power_spectrum(
    images: np.ndarray, n_bins: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of one image or the mean over a stack.

    Parameters
    ----------
    images
        ``(H, W)`` or ``(..., H, W)``; each image's mean is removed first.
    n_bins
        Radial bins from 0 to 0.5 cycles/pixel (default ``min(H, W) // 2``).

    Returns
    -------
    freq
        ``(K,)`` bin centres in cycles/pixel (divide by the pixel spacing for 1/Å).
    power
        ``(K,)`` mean ``|FFT|² / (H·W)`` of the frequencies in each bin, averaged over images.
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"need (H, W) or (..., H, W) images, got shape {x.shape}")
    h, w = x.shape[-2:]
    x = x.reshape(-1, h, w)
    x = x - x.mean(axis=(1, 2), keepdims=True)
    power = (np.abs(np.fft.fft2(x)) ** 2).mean(axis=0) / (h * w)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    k = int(n_bins or max(1, min(h, w) // 2))
    edges = np.linspace(0.0, 0.5, k + 1)
    idx = np.digitize(radius.ravel(), edges) - 1
    keep = (idx >= 0) & (idx < k)
    sums = np.bincount(idx[keep], weights=power.ravel()[keep], minlength=k)
    counts = np.bincount(idx[keep], minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return 0.5 * (edges[:-1] + edges[1:]), mean


def spectrum_distance(power_a: np.ndarray, power_b: np.ndarray) -> float:
    """RMS of ``log10(power_a / power_b)`` over bins where both are positive, in decades."""
    a = np.asarray(power_a, dtype=np.float64)
    b = np.asarray(power_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"spectra of different lengths: {a.shape} vs {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    if not ok.any():
        return float("nan")
    return float(np.sqrt(np.mean((np.log10(a[ok]) - np.log10(b[ok])) ** 2)))


def histogram_distance(a: np.ndarray, b: np.ndarray, bins: int = 128) -> float:
    """Jensen-Shannon distance (base 2) between the intensity histograms of ``a`` and ``b``.

    Both histograms share ``bins`` bins over the pooled 0.1-99.9 percentile range (values
    outside land in the end bins). 0: same distribution; 1: disjoint.
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    lo, hi = np.percentile(np.concatenate([x, y]), [0.1, 99.9])
    if not hi > lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    p = np.histogram(np.clip(x, lo, hi), edges)[0].astype(np.float64)
    q = np.histogram(np.clip(y, lo, hi), edges)[0].astype(np.float64)
    p /= p.sum()
    q /= q.sum()
    m = 0.5 * (p + q)

    def kl(u: np.ndarray, v: np.ndarray) -> float:
        nz = u > 0
        return float(np.sum(u[nz] * np.log2(u[nz] / v[nz])))

    return float(np.sqrt(max(0.0, 0.5 * kl(p, m) + 0.5 * kl(q, m))))


def realism(candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Both distances of a ``(T, H, W)`` candidate from a reference of the same tilt size.

    Spectra are averaged over tilts; histograms pool every tilt.
    """
    c = np.asarray(candidate)
    r = np.asarray(reference)
    if c.shape[-2:] != r.shape[-2:]:
        raise ValueError(f"tilt sizes differ: {c.shape[-2:]} vs {r.shape[-2:]}")
    _, pc = radial_power_spectrum(c)
    _, pr = radial_power_spectrum(r)
    return {
        "spectrum_distance": spectrum_distance(pc, pr),
        "histogram_distance": histogram_distance(c, r),
    }
