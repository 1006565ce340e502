"""Tomograms by weighted back-projection (FakET §1.6), in torch, slab by slab over Y.

The pipeline is FakET's: optional binning of the tilts with a cubic spline, a 2-D
(``approxShrec``) or 1-D (``ramp``) filter, then linear-interpolation back-projection. Everything
runs on the device of the input tensor (CPU or GPU); the back-projection works on slabs of Y rows
and equals the whole-volume result (each Y row is independent; the filters are applied to the
whole tilts first).

Geometry and alignment
----------------------
The back-projector is the adjoint of :func:`faket_dask.stages.projection.project`'s geometry (not of
its bilinear-rotation arithmetic): a voxel at
offset ``(dz, dx)`` from the centre of a ``(Z, X)`` slice reads the detector at offset
``dx·cos θ − dz·sin θ`` from the detector centre, with linear interpolation (zero outside the
detector, like ``numpy.interp(left=0, right=0)`` in ``skimage.transform.iradon``). Centres
follow skimage: index ``n // 2`` of an unbinned axis of length ``n``. The output is
``(Z, Y, X)`` float32 with ``Z = thickness``, ``Y = H // bin`` and ``X = W // bin``.

* **No Z flip and no Z offset.** FakET back-projects with radontea, whose sign convention mirrors
  Z, then flips Z and is left with a one-voxel Z offset for even sizes (spec §8 item 7). Here the
  back-projection uses the projector's own convention, so a point at ``(z, y, x)`` of a volume
  projected by ``project`` reconstructs at ``(z − (Z//2 − thickness//2), y, x)`` (unbinned):
  the tomogram's centre slice is the volume's centre slice, and with ``thickness == Z`` voxel
  ``(z, y, x)`` is voxel ``(z, y, x)`` (tested: the peak is on the voxel, its centroid within
  one voxel).
* **Binning grid.** Binning by ``b`` uses one grid for tilts, tomograms and masks: binned voxel
  ``i`` covers unbinned voxels ``[b·i, b·i + b)``, so its centre is unbinned coordinate
  ``b·i + (b − 1)/2``. :func:`bin_tilts` samples the cubic spline at exactly those centres
  (``scipy.ndimage.zoom(order=3, grid_mode=True, mode='mirror')``). FakET's own zoom is
  corner-aligned (binned ``i`` ↔ unbinned ``i·(n − 1)/(n_b − 1)``), which stretches the grid by
  up to ±½ unbinned pixel towards the edges; that is not reproduced. :func:`bin_volume_labels`
  bins masks on the same blocks. The back-projector uses the unbinned centres expressed in
  binned coordinates, ``(c_u − (b − 1)/2) / b`` (fractional, e.g. ``thickness/2 − 1/4`` along Z
  for ``b = 2``), with ``c_u = (b·thickness) // 2`` along Z and ``W // 2`` along X and on the
  detector. So for a volume ``(Z, Y, X)`` with ``X = W`` and ``thickness = Z // b``, tomogram
  voxel ``(k, i, j)`` and ``bin_volume_labels(mask, b)[k, i, j]`` cover the same unbinned
  block ``[b·k, b·k + b) × [b·i, b·i + b) × [b·j, b·j + b)``: a particle is found at the same
  binned voxel in the tomogram and in the binned mask (tested, also for odd Z and X with
  ``b = 2``; for odd W with an even padded size, pass ``detector_centre``, see
  :func:`reconstruct`). A thinner tomogram is centred on the volume's centre slice.
* **Sign.** ``project`` negates (dense = dark), and this module does not negate back: the
  tomogram of ``project(volume)`` is dark where the volume is dense, like SHREC's and real
  tomograms.

Filters and scale
-----------------
* ``ramp``: the band-limited ramp |k| along X in its spatially sampled (Ram-Lak, Kak & Slaney
  eq. 61) form, applied to each row zero-padded to the next power of two ≥ 2W (at least 64),
  exactly as ``skimage.transform.iradon(filter_name='ramp')``; scale ``π / (2T)`` as iradon.
* ``approxShrec``: FakET's 2-D filter (see :func:`approx_shrec_filter`), applied with an
  unpadded 2-D FFT over (Y, X) as FakET does; scale ``π / T`` (radontea's net scale), so that
  amplitudes match FakET's.
* ``none``: only each row's mean is removed (radontea removes DC even unfiltered); scale ``π/T``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from faket_dask.errors import InputError
from faket_dask.stages.projection import operator_cache_bytes

FILTERS: tuple[str, ...] = ("ramp", "approxShrec", "none")

# Cubic B-spline prefilter (inverse of the sampled kernel [1, 4, 1]/6): h[k] = √3·z1^|k| with
# z1 = √3 − 2. Truncated at |k| ≤ 14, the neglected tail is below 3e-8 of the centre tap.
_Z1 = math.sqrt(3.0) - 2.0
_PREFILTER_HALF = 14


def _as_tensor(
    x: torch.Tensor | np.ndarray, device: torch.device | str | None = None
) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x
    else:
        t = torch.from_numpy(np.ascontiguousarray(x))
    if device is not None:
        t = t.to(device)
    return t


def _mirror_indices(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of a whole-sample mirror extension (``d c b | a b c d | c b a``), n + 2·pad long."""
    i = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - i, i)


def _spline_bin_kernel(b: int) -> np.ndarray:
    """Taps mapping input samples to the cubic spline's value half-way between two samples."""
    k = np.arange(-_PREFILTER_HALF, _PREFILTER_HALF + 1)
    prefilter = math.sqrt(3.0) * _Z1 ** np.abs(k)
    # Cubic B-spline at offsets -1.5, -0.5, 0.5, 1.5 (value at fractional position 0.5).
    taps = np.array([1.0, 23.0, 23.0, 1.0]) / 48.0
    return np.convolve(prefilter, taps)  # length 2P + 4, symmetric


def _bin_axis_spline(x: torch.Tensor, b: int, dim: int) -> torch.Tensor:
    """Cubic-spline sampling of ``x`` along ``dim`` at the binned centres ``b·i + (b − 1)/2``."""
    n = x.shape[dim]
    n_out = n // b
    if b == 1:
        return x
    if b % 2 == 1:
        # Odd b: the centres fall on samples, where the interpolating spline equals the data.
        idx = torch.arange(n_out, device=x.device) * b + (b - 1) // 2
        return x.index_select(dim, idx)
    # value(s + 1/2) = Σ_n kernel[n]·x[s + n − P − 1] (P = _PREFILTER_HALF; the kernel is
    # symmetric). conv1d correlates: full[m] = Σ_n kernel[n]·ext[m + n] with ext[m] = x[m − pad],
    # so with pad = P + 2 the value between samples s and s + 1 is full[s + 1]. Binned centre
    # b·i + (b − 1)/2 = s + 1/2 gives s = b·i + b/2 − 1, i.e. full index b·i + b/2.
    kernel = _spline_bin_kernel(b)
    pad = _PREFILTER_HALF + 2
    x_m = x.movedim(dim, -1)
    shape = x_m.shape
    flat = x_m.reshape(-1, 1, n)
    ext = flat.index_select(2, _mirror_indices(n, pad, x.device))
    w = torch.as_tensor(kernel, dtype=x.dtype, device=x.device).view(1, 1, -1)
    full = torch.nn.functional.conv1d(ext, w)
    idx = torch.arange(n_out, device=x.device) * b + b // 2
    out = full.index_select(2, idx)
    return out.reshape(*shape[:-1], n_out).movedim(-1, dim)


def bin_tilts(tilts: torch.Tensor | np.ndarray, b: int) -> torch.Tensor:
    """Bin each tilt ×b in Y and X with a cubic spline on the shared binning grid.

    Parameters
    ----------
    tilts
        `(T, H, W)` tilts (tensor or array).
    b
        Binning factor ≥ 1.

    Returns
    -------
    torch.Tensor
        `(T, H // b, W // b)`, float32 (float64 stays float64), on the input's device. Binned
        pixel ``i`` samples the interpolating cubic B-spline of the input at unbinned coordinate
        ``b·i + (b − 1)/2``, the centre of the block ``[b·i, b·i + b)`` — the same grid as
        :func:`bin_volume_labels`. This equals ``scipy.ndimage.zoom(tilt, 1/b, order=3,
        grid_mode=True, mode='mirror')`` for sizes divisible by ``b`` (tested). Like FakET's
        zoom it has no anti-alias prefilter (and for odd ``b`` it reduces to decimation).
    """
    if b < 1:
        raise InputError(f"binning factor {b} must be a whole number >= 1")
    t = _as_tensor(tilts)
    if t.ndim != 3:
        raise InputError(f"tilts must be (T, H, W); got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.float()
    if min(t.shape[1], t.shape[2]) < b:
        raise InputError(f"tilts {tuple(t.shape[1:])} are smaller than the binning factor {b}")
    return _bin_axis_spline(_bin_axis_spline(t, b, 1), b, 2)


def bin_volume_labels(
    mask: torch.Tensor | np.ndarray, b: int, method: Literal["mode", "nearest"] = "mode"
) -> torch.Tensor | np.ndarray:
    """Bin a label volume ×b on the shared grid: voxel ``i`` covers unbinned ``[b·i, b·i + b)``.

    Parameters
    ----------
    mask
        `(Z, Y, X)` integer labels (class or instance ids), array or tensor.
    b
        Binning factor ≥ 1. Trailing voxels that do not fill a whole block are dropped
        (the output is `(Z // b, Y // b, X // b)`), as for :func:`bin_tilts`.
    method
        ``mode``: the most frequent label in the ``b³`` block; ties go to the largest label, so a
        particle wins a tie against background (0). ``nearest``: the voxel at offset ``b // 2``
        in each axis of the block (the voxel nearest the block centre ``(b − 1)/2``; for even
        ``b`` the upper of the two middle voxels).

    Returns
    -------
    Same type as ``mask`` (numpy array or tensor on the same device), same dtype.
    """
    if b < 1:
        raise InputError(f"binning factor {b} must be a whole number >= 1")
    is_tensor = isinstance(mask, torch.Tensor)
    arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if arr.ndim != 3:
        raise InputError(f"a label volume must be (Z, Y, X); got shape {arr.shape}")
    zb, yb, xb = (s // b for s in arr.shape)
    if b == 1:
        out = arr.copy()
    elif method == "nearest":
        o = b // 2
        out = np.ascontiguousarray(arr[o : zb * b : b, o : yb * b : b, o : xb * b : b])
    elif method == "mode":
        out = np.empty((zb, yb, xb), dtype=arr.dtype)
        step = max(1, (1 << 22) // max(1, yb * xb * b**3))  # binned Z planes per chunk
        for z0 in range(0, zb, step):
            z1 = min(zb, z0 + step)
            blk = arr[z0 * b : z1 * b, : yb * b, : xb * b]
            blk = blk.reshape(z1 - z0, b, yb, b, xb, b).transpose(0, 2, 4, 1, 3, 5)
            blk = blk.reshape(-1, b**3)
            counts = np.zeros(blk.shape, dtype=np.int64)
            for j in range(b**3):
                counts[:, j] = (blk == blk[:, j : j + 1]).sum(axis=1)
            best = counts.max(axis=1, keepdims=True)
            cand = np.where(counts == best, blk, blk.min(axis=1, keepdims=True))
            out[z0:z1] = cand.max(axis=1).reshape(z1 - z0, yb, xb)
    else:
        raise InputError(f"unknown label binning method {method!r}; use 'mode' or 'nearest'")
    if is_tensor:
        return torch.from_numpy(out).to(mask.device)
    return out


def ramp_filter_1d(width: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, int]:
    """The ramp |k| (Ram-Lak, spatially sampled) for rows of ``width`` zero-padded as iradon.

    Returns
    -------
    (filter, padded)
        `(padded // 2 + 1,)` float64 rfft weights and the padded length
        ``max(64, 2**ceil(log2(2·width)))``.
    """
    padded = max(64, int(2 ** math.ceil(math.log2(2 * width))))
    n = np.concatenate(
        (np.arange(1, padded / 2 + 1, 2, dtype=int), np.arange(padded / 2 - 1, 0, -2, dtype=int))
    )
    f = np.zeros(padded)
    f[0] = 0.25
    f[1::2] = -1.0 / (np.pi * n) ** 2
    weights = 2.0 * np.real(np.fft.rfft(f))
    return torch.as_tensor(weights, device=device), padded


def approx_shrec_filter(
    height: int, width: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """FakET's ``approxShrec`` 2-D filter for `(height, width)` tilts, in ``fft2`` order.

    The filter (spec §1.6, "reverse-engineered from SHREC21 reconstructions") is
    ``ramp(kx) · (gauss(kx, ky) + 0.33) · circle``, divided by its maximum, with integer
    frequency indices ``kx ∈ [−W/2, W/2)``, ``ky ∈ [−H/2, H/2)``:

    * ramp along X only: ``|kx| / c`` up to ``c = int(0.61 · (W // 2))`` (the "Crowther"
      frequency), 1 beyond; so the ``kx = 0`` column is 0 (DC removed along X);
    * ``gauss = exp(−kx²/(2σx²) − ky²/(2σy²))`` with ``σx = int(0.34 W)``, ``σy = int(0.20 H)``;
    * circle: 0 where ``(kx/(W//2 + 1))² + (ky/(H//2 + 1))² ≥ 1`` (for a square N×N tilt:
      index distance ≥ N/2 + 1, FakET's disc; for H ≠ W an ellipse through the same points).

    Differences from FakET: **the Gaussian is centred on DC.** FakET's centred grid is shifted
    such that the Gaussian's peak sits one frequency sample off DC (at index (N−1, N−1) of the
    unshifted grid, spec §8 item 8); that is fixed here. And FakET only handles square tilts;
    here X and Y use their own sizes (W along X, H along Y). For N = 512 the ky = 0 row is
    ≈0.41 at kx = 50, 0.75 at 100, ≈1 at 156 and 0.67 at Nyquist, as in the spec.

    Returns
    -------
    torch.Tensor
        `(height, width)` weights in ``torch.fft.fft2`` order (DC at [0, 0]), max 1.
    """
    ky = torch.fft.fftfreq(height, d=1.0 / height, device=device, dtype=dtype)
    kx = torch.fft.fftfreq(width, d=1.0 / width, device=device, dtype=dtype)
    ky, kx = torch.meshgrid(ky, kx, indexing="ij")
    crowther = max(1, int(0.61 * (width // 2)))
    ramp = torch.clamp(kx.abs() / crowther, max=1.0)
    sx = max(1, int(0.34 * width))
    sy = max(1, int(0.20 * height))
    gauss = torch.exp(-(kx**2) / (2.0 * sx**2) - ky**2 / (2.0 * sy**2)) + 0.33
    circle = ((kx / (width // 2 + 1)) ** 2 + (ky / (height // 2 + 1)) ** 2) < 1.0
    filt = ramp * gauss * circle
    return filt / filt.max()


def filter_tilts(tilts: torch.Tensor, filter: str = "ramp") -> torch.Tensor:
    """Apply a reconstruction filter to `(T, H, W)` tilts (whole tilts; ``approxShrec`` is 2-D).

    Returns float64 filtered tilts on the input's device, without the back-projection scale.
    """
    t = tilts.to(torch.float64)
    if filter == "ramp":
        weights, padded = ramp_filter_1d(t.shape[-1], device=t.device)
        spec = torch.fft.rfft(t, n=padded, dim=-1) * weights
        ramped: torch.Tensor = torch.fft.irfft(spec, n=padded, dim=-1)[..., : t.shape[-1]]
        return ramped
    if filter == "approxShrec":
        filt = approx_shrec_filter(t.shape[-2], t.shape[-1], device=t.device)
        shrec: torch.Tensor = torch.fft.ifft2(torch.fft.fft2(t) * filt).real
        return shrec
    if filter == "none":
        return t - t.mean(dim=-1, keepdim=True)
    raise InputError(f"unknown reconstruction filter {filter!r}; use one of {', '.join(FILTERS)}")


def _filter_scale(filter: str, n_tilts: int) -> float:
    return math.pi / (2 * n_tilts) if filter == "ramp" else math.pi / n_tilts


#: Memory budget (bytes) of one angle chunk of the back-projection operator.
_OP_BUDGET = 256 * 1024**2
#: Default size (bytes) of one output slab of the back-projection.
_SLAB_BUDGET = 512 * 1024**2


class BackProjector:
    """Linear-interpolation back-projection for a fixed geometry, applied slab by slab.

    A voxel at ``(z, x)`` reads detector coordinate
    ``det_centre + (x − x_centre)·cos θ − (z − z_centre)·sin θ`` with linear interpolation;
    coordinates outside ``[0, W − 1]`` contribute 0 (``numpy.interp(left=0, right=0)``, as in
    ``skimage.transform.iradon``). Defaults: ``z_centre = thickness // 2``,
    ``x_centre = det_centre = W // 2``, ``X = W`` (skimage's centres).

    The operator (two detector taps per voxel and tilt) depends only on the geometry, so it is
    built once, in angle chunks of at most ``_OP_BUDGET`` bytes, and kept when the whole
    operator fits the projector's budget (:func:`~.projection.operator_cache_bytes`:
    rebuilding it for every slab costs more than applying it); each
    call then sums ``T`` taps per voxel for every Y row of the slab with one
    ``embedding_bag`` per chunk (float32; CPU or CUDA).
    """

    def __init__(
        self,
        angles_deg: Sequence[float] | np.ndarray,
        thickness: int,
        det_width: int,
        z_centre: float | None = None,
        x_centre: float | None = None,
        det_centre: float | None = None,
        width: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
        self.thickness = int(thickness)
        self.det_width = int(det_width)
        self.width = self.det_width if width is None else int(width)
        self.z_c = self.thickness // 2 if z_centre is None else float(z_centre)
        self.det_c = self.det_width // 2 if det_centre is None else float(det_centre)
        self.x_c = self.det_c if x_centre is None else float(x_centre)
        self.device = torch.device(device)
        n_vox = self.thickness * self.width
        per_tilt = n_vox * 2 * (8 + 4)
        step = max(1, _OP_BUDGET // max(1, per_tilt))
        self.chunks = [
            (t0, min(len(self.angles), t0 + step)) for t0 in range(0, len(self.angles), step)
        ]
        self._ops: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._keep = per_tilt * len(self.angles) <= operator_cache_bytes(self.device)
        if len(self.chunks) == 1:
            self._ops = [self._build(*self.chunks[0])]

    def _build(self, t0: int, t1: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Index `(V, 2·Tc)` into the chunk's `(Tc·(W + 2), y)` table, and float32 weights."""
        dev, n_w = self.device, self.det_width
        theta = torch.as_tensor(np.deg2rad(self.angles[t0:t1]), device=dev).view(1, 1, -1)
        zz = torch.arange(self.thickness, device=dev, dtype=torch.float64).view(-1, 1, 1)
        xx = torch.arange(self.width, device=dev, dtype=torch.float64).view(1, -1, 1)
        s = self.det_c + (xx - self.x_c) * torch.cos(theta) - (zz - self.z_c) * torch.sin(theta)
        s = s.reshape(-1, t1 - t0)  # (V, Tc)
        valid = (s >= 0) & (s <= n_w - 1)
        s = torch.where(valid, s, torch.full_like(s, -1.0))
        s0 = torch.floor(s)
        w1 = (s - s0) * valid
        w0 = (1.0 - (s - s0)) * valid
        # The table has one zero column on each side: column 0 ↔ detector −1.
        base = torch.arange(t1 - t0, device=dev).view(1, -1) * (n_w + 2)
        i0 = base + (s0.long() + 1).clamp(0, n_w + 1)
        i1 = base + (s0.long() + 2).clamp(0, n_w + 1)
        index = torch.cat([i0, i1], dim=1)
        weight = torch.cat([w0, w1], dim=1).to(torch.float32)
        return index, weight

    def __call__(self, filtered: torch.Tensor) -> torch.Tensor:
        """Back-project `(T, y, W)` filtered rows to `(thickness, y, X)` float32, unscaled."""
        n_t, n_y, n_w = filtered.shape
        if n_t != len(self.angles) or n_w != self.det_width:
            raise InputError(
                f"rows of shape {tuple(filtered.shape)} do not match the back-projector "
                f"({len(self.angles)} tilts, width {self.det_width})"
            )
        padded = torch.nn.functional.pad(filtered.to(torch.float32), (1, 1))
        out = torch.zeros(self.thickness * self.width, n_y, device=filtered.device)
        if self._ops is None and self._keep:
            self._ops = [self._build(t0, t1) for t0, t1 in self.chunks]
        for k, (t0, t1) in enumerate(self.chunks):
            index, weight = self._ops[k] if self._ops is not None else self._build(t0, t1)
            table = padded[t0:t1].permute(0, 2, 1).reshape((t1 - t0) * (n_w + 2), n_y)
            out += torch.nn.functional.embedding_bag(
                index, table, mode="sum", per_sample_weights=weight
            )
        return out.view(self.thickness, self.width, n_y).permute(0, 2, 1)


@dataclass(frozen=True)
class Centring:
    """Where the tomogram's centre lies in the unbinned frame (both matter for odd sizes only).

    Attributes
    ----------
    unbinned_thickness
        Depth of the unbinned volume the tomogram is centred on (default ``bin · thickness``);
        only matters for odd sizes with ``bin > 2``.
    detector_centre
        Unbinned detector column where the volume's centre projects (default ``W // 2``; the
        tomogram's X centre stays at ``W // 2``). ``project`` puts it at ``W // 2`` except
        for an odd ``W`` with an even padded size ``P`` (skimage's ``// 2`` centres; see
        :func:`faket_dask.stages.projection.detector_position`), where it is ``W // 2 + 1``: pass
        ``detector_position(Z // 2, X // 2, 0, (Z, X), W)`` to be exact for any shape.
    """

    unbinned_thickness: int | None = None
    detector_centre: float | None = None


def _centres(
    thickness: int, width_unbinned: int, b: int, centring: Centring
) -> tuple[float, float, float]:
    """Binned-grid coordinates of the unbinned centres: volume Z, volume X, detector."""
    n_z = b * thickness if centring.unbinned_thickness is None else centring.unbinned_thickness
    det_u = width_unbinned // 2 if centring.detector_centre is None else centring.detector_centre

    def binned(c: float) -> float:
        return (c - (b - 1) / 2) / b

    return binned(n_z // 2), binned(width_unbinned // 2), binned(det_u)


def _prepare(
    tilts: torch.Tensor | np.ndarray,
    angles_deg: Sequence[float] | np.ndarray,
    thickness: int,
    bin: int,
    filter: str,
    device: torch.device | str | None,
) -> tuple[torch.Tensor, np.ndarray, int]:
    t = _as_tensor(tilts, device)
    if t.ndim != 3:
        raise InputError(f"tilts must be a (T, H, W) stack; got shape {tuple(t.shape)}")
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    if angles.size != t.shape[0]:
        raise InputError(f"{t.shape[0]} tilts but {angles.size} angles; give one angle per tilt")
    if thickness < 1:
        raise InputError(f"thickness {thickness} must be >= 1 (binned voxels)")
    if filter not in FILTERS:
        raise InputError(
            f"unknown reconstruction filter {filter!r}; use one of {', '.join(FILTERS)}"
        )
    width_unbinned = t.shape[-1]
    t = t.to(torch.float32) if not t.is_floating_point() else t
    t = bin_tilts(t, bin)
    return filter_tilts(t, filter), angles, width_unbinned


def iter_reconstruct_slabs(
    tilts: torch.Tensor | np.ndarray,
    angles_deg: Sequence[float] | np.ndarray,
    thickness: int,
    bin: int = 1,
    filter: str = "ramp",
    slab_size: int | None = None,
    device: torch.device | str | None = None,
    centring: Centring = Centring(),
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield ``(y0, y1, slab)`` with slab `(thickness, y1 − y0, X)` float32, Y slab by slab.

    Same arguments as :func:`reconstruct`; lets a caller write each slab out (e.g. to Zarr)
    without holding the whole tomogram.
    """
    filtered, angles, width_u = _prepare(tilts, angles_deg, thickness, bin, filter, device)
    z_c, x_c, det_c = _centres(thickness, width_u, bin, centring)
    scale = _filter_scale(filter, len(angles))
    _, n_y, n_w = filtered.shape
    bp = BackProjector(angles, thickness, n_w, z_c, x_c, det_c, device=filtered.device)
    filtered = (filtered * scale).to(torch.float32)
    if slab_size is None:  # output slabs of about _SLAB_BUDGET bytes
        slab_size = max(8, _SLAB_BUDGET // max(1, 4 * thickness * bp.width))
    step = max(1, int(slab_size))
    for y0 in range(0, n_y, step):
        y1 = min(n_y, y0 + step)
        yield y0, y1, bp(filtered[:, y0:y1])


def reconstruct(
    tilts: torch.Tensor | np.ndarray,
    angles_deg: Sequence[float] | np.ndarray,
    thickness: int,
    bin: int = 1,
    filter: str = "ramp",
    slab_size: int | None = None,
    device: torch.device | str | None = None,
    centring: Centring = Centring(),
) -> torch.Tensor:
    """Weighted back-projection of a tilt-series into a tomogram.

    Parameters
    ----------
    tilts
        `(T, H, W)` tilts (tensor or array); Y (rows) is the tilt axis. Dense = dark as
        produced by :func:`faket_dask.stages.projection.project`; no sign change is applied.
    angles_deg
        `(T,)` tilt angles in degrees, in ``project``'s convention.
    thickness
        Z size of the tomogram in binned voxels.
    bin
        Binning of the tilts before back-projection (FakET: 2), see :func:`bin_tilts`.
    filter
        ``ramp``, ``approxShrec`` (FakET's) or ``none`` (row mean removed only).
    slab_size
        Binned Y rows back-projected at once (``None``: slabs of about 512 MB of output). The
        result does not depend on it.
    device
        Where to compute (default: the input tensor's device; arrays go to CPU).
    centring
        Where the unbinned volume's centre lies (:class:`Centring`; matters for odd sizes).

    Returns
    -------
    torch.Tensor
        `(thickness, H // bin, W // bin)` float32 on the compute device. See the module
        docstring for how its grid aligns with the volume and with binned masks.
    """
    slabs = [
        s
        for _, _, s in iter_reconstruct_slabs(
            tilts,
            angles_deg,
            thickness,
            bin,
            filter,
            slab_size,
            device,
            centring,
        )
    ]
    return torch.cat(slabs, dim=1)
