"""Style references from real data: prepared from a real tilt-series, or projected from a tomogram.

FakET needs a *style reference*: a tilt-series from the user's microscope (same tilt scheme,
pixel spacing and detector size as the dataset). Three ways to get one:

* :func:`prepare_reference`: a real tilt-series, resampled to the dataset's pixel spacing,
  rotated so that its tilt axis lies along Y and centre-cropped; angles from ``.tlt``/``.rawtlt``
  or a SerialEM ``.mdoc`` (:func:`read_mdoc`).
* :func:`from_tomogram`: only a reconstructed tomogram is available; its line integrals about
  Y at the dataset's angles (what the faket-polnet pipeline does with IMOD ``xyzproj``/``tilt``).
* nothing is available: :mod:`faket_dask.stages.reference_synth` makes a documented,
  physics-lite **stand-in** (:func:`~faket_dask.stages.reference_synth.synth_reference`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from faket_dask.angles import validate_angles
from faket_dask.errors import InputError
from faket_dask.io.series import TiltSeries
from faket_dask.stages.projection import project

# --------------------------------------------------------------------------- angles: .mdoc


@dataclass
class MdocInfo:
    """What :func:`read_mdoc` extracts from a SerialEM ``.mdoc``.

    Attributes
    ----------
    angles_deg
        `(T,)` ``TiltAngle`` per ``[ZValue = n]`` section, in ZValue (stack) order.
    z_values
        `(T,)` the section numbers, in file order.
    pixel_spacing
        ``PixelSpacing`` in Å (first found), or ``None``.
    tilt_axis_deg
        ``Tilt axis angle`` from the ``[T = ...]`` header, else the first ``RotationAngle``,
        or ``None``.
    """

    angles_deg: np.ndarray
    z_values: np.ndarray
    pixel_spacing: float | None = None
    tilt_axis_deg: float | None = None


_SECTION = re.compile(r"^\s*\[\s*ZValue\s*=\s*(-?\d+)\s*\]")
_KEY = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_TILT_AXIS = re.compile(r"Tilt\s*axis\s*angle\s*=\s*(-?[0-9.eE+-]+)")


def read_mdoc(path: str | Path) -> MdocInfo:
    """Parse a SerialEM ``.mdoc``: ``TiltAngle = `` per ``[ZValue = n]`` section.

    Sections are returned sorted by ZValue (the order of the images in the stack). A section
    without ``TiltAngle`` is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"mdoc file {path} does not exist; give SerialEM's .mdoc of the stack")
    sections: dict[int, float | None] = {}
    current: int | None = None
    spacing: float | None = None
    axis: float | None = None
    rotation: float | None = None
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if (m := _SECTION.match(line)) is not None:
            current = int(m.group(1))
            if current in sections:
                raise InputError(f"{path}:{lineno}: [ZValue = {current}] appears twice")
            sections[current] = None
            continue
        if axis is None and (m := _TILT_AXIS.search(line)) is not None:
            axis = float(m.group(1))
            continue
        if line.lstrip().startswith("["):
            current = None  # another kind of section ([T = ...], [MontSection = ...])
            continue
        if (m := _KEY.match(line)) is None:
            continue
        key, value = m.group(1), m.group(2)
        try:
            if key == "TiltAngle" and current is not None:
                sections[current] = float(value.split()[0])
            elif key == "PixelSpacing" and spacing is None:
                spacing = float(value.split()[0])
            elif key == "RotationAngle" and rotation is None:
                rotation = float(value.split()[0])
        except (ValueError, IndexError):
            raise InputError(f"{path}:{lineno}: {key} = {value!r} is not a number") from None
    if not sections:
        raise InputError(f"{path} has no [ZValue = n] sections; is it a SerialEM .mdoc?")
    missing = [z for z, a in sections.items() if a is None]
    if missing:
        raise InputError(f"{path}: section [ZValue = {missing[0]}] has no TiltAngle")
    z = np.array(sorted(sections), dtype=np.int64)
    angles = np.array([sections[int(k)] for k in z], dtype=np.float64)
    return MdocInfo(angles, z, spacing, axis if axis is not None else rotation)


# --------------------------------------------------------------------------- prepare


def _lowpass_mirror(x: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Zero spatial frequencies above ``cutoff`` cycles/pixel (a disc) of `(B, H, W)` images.

    The images are mirrored to `(2H, 2W)` first, so the FFT sees no edge discontinuity.
    """
    h, w = x.shape[-2:]
    ext = torch.cat([x, x.flip(-1)], dim=-1)
    ext = torch.cat([ext, ext.flip(-2)], dim=-2)
    ky = torch.fft.fftfreq(2 * h, device=x.device, dtype=torch.float64).view(-1, 1)
    kx = torch.fft.rfftfreq(2 * w, device=x.device, dtype=torch.float64).view(1, -1)
    keep = (kx**2 + ky**2) <= cutoff**2
    spec = torch.fft.rfft2(ext.to(torch.float64)) * keep
    out: torch.Tensor = torch.fft.irfft2(spec, s=(2 * h, 2 * w))[..., :h, :w].to(x.dtype)
    return out


def resample_rotate(
    tilts: torch.Tensor,
    scale: float,
    tilt_axis_deg: float,
    out_shape: tuple[int, int],
    batch: int = 8,
) -> torch.Tensor:
    """Resample `(T, H, W)` tilts onto a rotated, scaled, centred `out_shape` grid.

    Output pixel ``(r, c)`` at offset ``(u_y, u_x) = (r − (H_o − 1)/2, c − (W_o − 1)/2)`` from
    the output centre samples the input at offset ``scale · R(α)·(u_x, u_y)`` (x = column,
    y = row) from the input centre ``((H − 1)/2, (W − 1)/2)``, where ``R(α)`` rotates
    counterclockwise by ``α = tilt_axis_deg`` in the x-y plane. ``scale`` is output pixel
    spacing / input pixel spacing. When ``scale > 1`` the input is first low-passed (disc) at the
    output's Nyquist frequency (anti-aliasing). Bicubic interpolation; pixels outside the input
    take the tilt's mean.
    """
    t = tilts.to(torch.float32)
    n, h, w = t.shape
    ho, wo = out_shape
    a = math.radians(tilt_axis_deg)
    ca, sa = math.cos(a), math.sin(a)
    dev = t.device
    uy = torch.arange(ho, device=dev, dtype=torch.float64) - (ho - 1) / 2
    ux = torch.arange(wo, device=dev, dtype=torch.float64) - (wo - 1) / 2
    uy, ux = torch.meshgrid(uy, ux, indexing="ij")
    x = scale * (ux * ca - uy * sa) + (w - 1) / 2
    y = scale * (ux * sa + uy * ca) + (h - 1) / 2
    # grid_sample with align_corners=False: pixel index i ↔ normalised (2i + 1)/n − 1.
    grid = torch.stack([(2 * x + 1) / w - 1, (2 * y + 1) / h - 1], dim=-1).to(torch.float32)
    out = torch.empty((n, ho, wo), dtype=torch.float32, device=dev)
    for b0 in range(0, n, batch):
        chunk = t[b0 : b0 + batch]
        if scale > 1.0:
            chunk = _lowpass_mirror(chunk, 0.5 / scale)
        mean = chunk.mean(dim=(-2, -1), keepdim=True)
        g = grid.unsqueeze(0).expand(chunk.shape[0], -1, -1, -1)
        res = torch.nn.functional.grid_sample(
            (chunk - mean).unsqueeze(1),
            g,
            mode="bicubic",
            padding_mode="zeros",
            align_corners=False,
        )
        out[b0 : b0 + batch] = res.squeeze(1) + mean
    return out


def prepare_reference(
    series: TiltSeries,
    input_pixel_spacing: float | None,
    target_pixel_spacing: float,
    tilt_axis_deg: float = 0.0,
    crop: tuple[int, int] | None = None,
    angles_deg: Sequence[float] | np.ndarray | None = None,
    device: torch.device | str = "cpu",
) -> TiltSeries:
    """Turn a real tilt-series into a style reference on the dataset's grid.

    Parameters
    ----------
    series
        The real tilt-series, `(T, H, W)`.
    input_pixel_spacing
        Its pixel spacing in Å (``None``: ``series.pixel_spacing``, which must then be known).
    target_pixel_spacing
        The dataset's pixel spacing in Å.
    tilt_axis_deg
        The tilt axis angle α as IMOD and SerialEM give it (``Tilt axis angle`` in the .mdoc,
        ``RotationAngle``): the angle of the tilt axis from the image's Y axis, counterclockwise
        positive, for the image displayed with X to the right and Y (increasing row index)
        up. In array terms the axis runs along ``(d_row, d_col) = (cos α, −sin α)``. The image
        is rotated by −α about its centre so that the axis lies along Y (rows), FakET's tilt
        axis. (α and α ± 180° describe the same axis and give images rotated by 180° from each
        other: the same statistics, which is what a style reference is for.)
    crop
        Output `(H, W)` in target pixels, taken about the centre (``None``: the whole
        resampled image, ``floor(H·in/target) × floor(W·in/target)``). Pixels that fall outside
        the rotated input take the tilt's mean; crop to avoid them.
    angles_deg
        Tilt angles (``None``: ``series.angles_deg``, which must then be known). Tilts are
        re-ordered by increasing angle (SerialEM stacks may be in acquisition order).
    device
        Where to compute.

    Returns
    -------
    TiltSeries
        `(T, H_o, W_o)` float32, angles sorted, ``pixel_spacing = target_pixel_spacing``.
    """
    data = np.asarray(series.data)
    if data.ndim != 3:
        raise InputError(f"a tilt-series must be (T, H, W); got shape {data.shape}")
    spacing_in = input_pixel_spacing if input_pixel_spacing is not None else series.pixel_spacing
    if spacing_in is None or not spacing_in > 0:
        raise InputError(
            "the reference's pixel spacing is unknown; pass --input-pixel-spacing (Å) or an .mdoc"
        )
    if not target_pixel_spacing > 0:
        raise InputError(f"target pixel spacing {target_pixel_spacing} must be > 0 Å")
    angles = series.angles_deg if angles_deg is None else angles_deg
    if angles is None:
        raise InputError(
            "the reference's tilt angles are unknown; give a .tlt/.rawtlt file or an .mdoc"
        )
    angles = np.asarray(angles, dtype=np.float64).reshape(-1)
    if angles.size != data.shape[0]:
        raise InputError(
            f"the reference has {data.shape[0]} tilts but {angles.size} angles were given"
        )
    order = np.argsort(angles, kind="stable")
    angles = validate_angles(angles[order], source="reference tilt angles")
    scale = float(target_pixel_spacing) / float(spacing_in)
    h, w = data.shape[1:]
    if crop is None:
        out_shape = (int(h / scale), int(w / scale))
    else:
        out_shape = (int(crop[0]), int(crop[1]))
    if min(out_shape) < 1:
        raise InputError(f"the prepared reference would be {out_shape} pixels; check the sizes")
    tilts = torch.from_numpy(np.ascontiguousarray(data[order], dtype=np.float32)).to(device)
    out = resample_rotate(tilts, scale, tilt_axis_deg, out_shape)
    return TiltSeries(out.cpu().numpy(), angles, float(target_pixel_spacing))


# --------------------------------------------------------------------------- from a tomogram


def from_tomogram(
    tomogram: np.ndarray | torch.Tensor,
    angles_deg: Sequence[float] | np.ndarray,
    detector_width: int | None = None,
    invert: bool = False,
    subtract_mean: bool = True,
    pixel_spacing: float | None = None,
    device: torch.device | str | None = None,
) -> TiltSeries:
    """Project a `(Z, Y, X)` tomogram about Y into a style tilt-series.

    Sign: the result is the plain line integral of the tomogram's values, as IMOD's
    reprojection gives, so a tomogram stored as usual for cryo-ET (dense = dark) gives tilts
    with dense = dark, like a real tilt-series. (:func:`~.projection.project` returns
    the *negated* line integral, FakET's convention for density maps, where dense = bright; this
    function negates it back.) Pass ``invert=True`` for a tomogram stored dense = bright.

    With ``subtract_mean`` (default) the tomogram's mean is removed first, so an arbitrary
    offset in the stored values (e.g. byte-scaled tomograms) does not turn into a tilt- and
    edge-dependent background. Geometry is ``project``'s (centre crop to ``detector_width``,
    default X).
    """
    vol = (
        tomogram
        if isinstance(tomogram, torch.Tensor)
        else torch.from_numpy(np.ascontiguousarray(tomogram))
    )
    if vol.ndim != 3:
        raise InputError(f"a tomogram must be 3-D (Z, Y, X); got shape {tuple(vol.shape)}")
    if device is not None:
        vol = vol.to(device)
    vol = vol.to(torch.float32)
    if subtract_mean:
        vol = vol - vol.mean(dtype=torch.float64).to(torch.float32)
    angles = validate_angles(np.asarray(angles_deg, dtype=np.float64), source="angles")
    tilts = project(vol, angles, detector_width=detector_width)
    if not invert:
        tilts = -tilts
    return TiltSeries(tilts.cpu().numpy(), angles, pixel_spacing)
