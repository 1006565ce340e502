"""Style references: prepared from real tilt-series, projected from tomograms, or synthesised.

FakET needs a *style reference*: a tilt-series from the user's microscope (same tilt scheme,
pixel spacing and detector size as the dataset). Three ways to get one:

* :func:`prepare_reference`: a real tilt-series, resampled to the dataset's pixel spacing,
  rotated so that its tilt axis lies along Y and centre-cropped; angles from ``.tlt``/``.rawtlt``
  or a SerialEM ``.mdoc`` (:func:`read_mdoc`).
* :func:`from_tomogram`: only a reconstructed tomogram is available; its line integrals about
  Y at the dataset's angles (what the faket-polnet pipeline does with IMOD ``xyzproj``/``tilt``).
* :func:`synth_reference` / :func:`demo_reference`: nothing is available; a documented,
  physics-lite **stand-in** (random phantom, CTF, shot noise, detector MTF, attenuation with
  tilt). It is not a microscope: use a real reference for real work.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faket_dask.angles import validate_angles
from faket_dask.errors import InputError
from faket_dask.io.series import TiltSeries

STAND_IN_NOTE = (
    "physics-lite stand-in reference (random phantom, CTF, shot noise, detector MTF, "
    "attenuation with tilt), not data from a microscope"
)

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
    from faket_dask.stages.projection import project

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


# --------------------------------------------------------------------------- synth


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å: ``h / sqrt(2 m e V (1 + e V / (2 m c²)))``."""
    v = voltage_kv * 1e3
    return 12.264259 / math.sqrt(v * (1.0 + 0.97847574e-6 * v))


def interaction_constant(voltage_kv: float) -> float:
    """σ_e in rad/(V·Å): ``(2π / (λ V)) · (m c² + e V) / (2 m c² + e V)``."""
    v = voltage_kv * 1e3
    mc2 = 510998.95
    return 2 * math.pi / (electron_wavelength(voltage_kv) * v) * (mc2 + v) / (2 * mc2 + v)


def ctf(
    k: np.ndarray | torch.Tensor,
    defocus_um: float,
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
) -> np.ndarray | torch.Tensor:
    """Phase-contrast CTF at spatial frequency ``k`` (1/Å).

    ``CTF = −(√(1 − A²)·sin χ + A·cos χ) = −sin(χ + asin A)`` with
    ``χ = π λ Δf k² − (π/2) Cs λ³ k⁴``, ``Δf > 0`` underfocus (Å), ``Cs`` in Å. Negative at low
    frequency: dense matter is dark.
    """
    lam = electron_wavelength(voltage_kv)
    df = defocus_um * 1e4
    cs = cs_mm * 1e7
    lib = torch if isinstance(k, torch.Tensor) else np
    k2 = k * k
    chi = math.pi * lam * df * k2 - 0.5 * math.pi * cs * lam**3 * k2 * k2
    out: np.ndarray | torch.Tensor = -lib.sin(chi + math.asin(amplitude_contrast))
    return out


def ctf_zeros(
    n: int,
    defocus_um: float,
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
) -> np.ndarray:
    """The first ``n`` zeros of :func:`ctf` in 1/Å: ``χ(k) + asin A = jπ``, ``j = 1..n``."""
    lam = electron_wavelength(voltage_kv)
    a = 0.5 * math.pi * cs_mm * 1e7 * lam**3
    b = math.pi * lam * defocus_um * 1e4
    out = []
    for j in range(1, n + 1):
        c = j * math.pi - math.asin(amplitude_contrast)
        # a q² − b q + c = 0 with q = k²: the smaller root (the defocus-dominated branch).
        q = c / b if a == 0 else (b - math.sqrt(b * b - 4 * a * c)) / (2 * a)
        out.append(math.sqrt(q))
    return np.array(out)


def detector_mtf(height: int, width: int, nu_c: float = 0.4) -> np.ndarray:
    """Analytic detector MTF on the ``fft2`` grid (not a measured one).

    ``MTF = sinc(νx)·sinc(νy) / (1 + (|ν|/ν_c)²)`` with ν in cycles/pixel: the pixel aperture
    times a Lorentzian charge-spread/DQE-like fall-off (0.64·0.61 ≈ 0.39 at Nyquist along an
    axis for ν_c = 0.4). Positive everywhere, so it moves no CTF zero.
    """
    ny = np.fft.fftfreq(height).reshape(-1, 1)
    nx = np.fft.fftfreq(width).reshape(1, -1)
    out: np.ndarray = np.sinc(nx) * np.sinc(ny) / (1.0 + (nx**2 + ny**2) / nu_c**2)
    return out


@dataclass
class SynthParams:
    """Parameters of :func:`synth_reference` (stored next to its output)."""

    shape: tuple[int, int, int]
    angles_deg: list[float]
    pixel_spacing: float
    defocus_um: float
    voltage_kv: float
    dose: float
    seed: int
    cs_mm: float
    amplitude_contrast: float
    thickness_nm: float
    mean_free_path_nm: float
    b_factor: float
    phantom: str = "cell"
    mtf_nu_c: float = 0.4
    note: str = STAND_IN_NOTE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (with ``stand_in: true``)."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["stand_in"] = True
        return d


def _soft_ball(vol: np.ndarray, c: np.ndarray, r: float, value: float, shell: float = 0.0) -> None:
    """Add a ball (or a shell of thickness ``shell``) with a one-voxel soft edge, in place."""
    reach = r + shell / 2 + 2
    lo = np.maximum(np.floor(c - reach).astype(int), 0)
    hi = np.minimum(np.ceil(c + reach + 1).astype(int), vol.shape)
    if np.any(hi <= lo):
        return
    zz, yy, xx = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    d = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
    if shell > 0:
        d = np.abs(d - r) - shell / 2 + r  # distance-to-shell mapped onto a ball of radius r
    w = np.clip(r + 0.5 - d, 0.0, 1.0)
    vol[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] += value * w


def synth_phantom(
    shape_zyx: tuple[int, int, int],
    pixel_spacing: float,
    rng: np.random.Generator,
    kind: str = "cell",
) -> np.ndarray:
    """A cheap random phantom: potential contrast ΔV over ice, in volts, `(Z, Y, X)`.

    ``cell``: proteins, balls of radius 2.5–8 nm at ΔV = 2.5 V filling ≈5% of the volume;
    vesicles, spherical lipid shells (radius 15–50 nm, 4 nm thick, ΔV = 2.5 V), about one per
    (250 nm)² of area; plus white "solvent texture" (σ = 0.3 V per voxel), which makes the
    projected spectrum white-ish at high frequency.

    ``carbon``: only white noise (σ = 1 V per voxel), like the amorphous carbon film used to
    calibrate a CTF: its projected power spectrum is flat, so the image's spectrum is the
    CTF² (Thon rings) times the envelope and MTF².
    """
    _, ny, nx = shape_zyx
    if kind == "carbon":
        return rng.normal(0.0, 1.0, size=shape_zyx).astype(np.float32)
    if kind != "cell":
        raise InputError(f"unknown phantom {kind!r}; use 'cell' or 'carbon'")
    ps = pixel_spacing / 10.0  # nm per voxel
    vol = rng.normal(0.0, 0.3, size=shape_zyx).astype(np.float32)
    dims = np.array(shape_zyx, dtype=np.float64)
    volume_nm3 = float(np.prod(dims)) * ps**3
    mean_ball = 4.0 / 3.0 * math.pi * 5.25**3
    n_balls = rng.poisson(0.05 * volume_nm3 / mean_ball)
    for _ in range(int(n_balls)):
        c = rng.uniform(0, 1, 3) * dims
        _soft_ball(vol, c, rng.uniform(2.5, 8.0) / ps, 2.5)
    n_ves = rng.poisson(ny * nx * ps**2 / 250.0**2)
    for _ in range(int(n_ves)):
        c = rng.uniform(0, 1, 3) * dims
        _soft_ball(vol, c, rng.uniform(15.0, 50.0) / ps, 2.5, shell=max(4.0 / ps, 1.0))
    return vol


@dataclass(frozen=True)
class SynthOptions:
    """The physics of a :func:`synth_reference` stand-in (defaults: a 300 kV cryo-ET series).

    Attributes
    ----------
    pixel_spacing
        Å per pixel.
    defocus_um
        Underfocus in µm (positive).
    voltage_kv
        Acceleration voltage in kV.
    dose
        Total dose over the series in e/Å².
    seed
        Seed of the phantom and the noise.
    phantom
        ``cell`` (proteins, vesicles, solvent texture) or ``carbon`` (white noise, for CTF
        checks), see :func:`synth_phantom`.
    mtf_nu_c
        The detector MTF's Lorentzian fall-off ν_c in cycles/pixel (:func:`detector_mtf`).
    cs_mm
        Spherical aberration in mm.
    amplitude_contrast
        Amplitude contrast fraction, in [0, 1).
    thickness_nm
        Specimen thickness in nm.
    mean_free_path_nm
        Inelastic mean free path at 300 kV in nm (scaled by β² for other voltages).
    b_factor
        Envelope B-factor in Å².
    """

    pixel_spacing: float = 10.0
    defocus_um: float = 3.0
    voltage_kv: float = 300.0
    dose: float = 120.0
    seed: int = 0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    thickness_nm: float = 150.0
    mean_free_path_nm: float = 350.0
    b_factor: float = 50.0
    phantom: str = "cell"
    mtf_nu_c: float = 0.4


def _check_synth(
    shape: tuple[int, int, int], angles_deg: Sequence[float] | np.ndarray, o: SynthOptions
) -> np.ndarray:
    """The validated ``(T,)`` angles of a :func:`synth_reference` call; InputError if bad."""
    t_n, h, w = (int(s) for s in shape)
    angles = validate_angles(np.asarray(angles_deg, dtype=np.float64), source="angles")
    if angles.size != t_n:
        raise InputError(f"shape has {t_n} tilts but {angles.size} angles were given")
    if min(h, w) < 8:
        raise InputError(f"synthetic reference of {h}x{w} pixels is too small; use >= 8x8")
    for name, value in (
        ("pixel spacing", o.pixel_spacing),
        ("voltage", o.voltage_kv),
        ("dose", o.dose),
        ("thickness", o.thickness_nm),
        ("mean free path", o.mean_free_path_nm),
        ("MTF fall-off", o.mtf_nu_c),
    ):
        if not value > 0:
            raise InputError(f"{name} must be > 0, got {value}")
    if not 0 <= o.amplitude_contrast < 1:
        raise InputError(f"amplitude contrast {o.amplitude_contrast} must be in [0, 1)")
    return angles


def _synth_image(
    hw: tuple[int, int],
    angles: np.ndarray,
    o: SynthOptions,
    rng: np.random.Generator,
    dev: torch.device,
) -> torch.Tensor:
    """Steps 1-2 of :func:`synth_reference`: the ``(T, H, W)`` float64 linear image ``I``."""
    from faket_dask.stages.projection import project

    h, w = hw
    pixel_spacing = o.pixel_spacing
    nz = max(4, round(o.thickness_nm * 10.0 / pixel_spacing))
    # The slab extends beyond the detector in X so that tilted rays never leave it sideways
    # (a real specimen is laterally much larger than the field of view).
    tan_max = math.tan(math.radians(min(float(np.max(np.abs(angles))), 80.0)))
    margin = math.ceil(nz / 2 * tan_max) + 2
    # The image is formed on a canvas padded by the CTF's delocalisation (λ·Δf·k_Nyquist) so
    # that the FFT's periodic wrap-around stays outside the cropped field of view.
    lam = electron_wavelength(o.voltage_kv)
    pad = math.ceil(lam * o.defocus_um * 1e4 * 0.5 / pixel_spacing**2) + 8
    hp, wp = h + 2 * pad, w + 2 * pad
    volume = synth_phantom((nz, hp, wp + 2 * margin), pixel_spacing, rng, o.phantom)
    dv = project(torch.from_numpy(volume).to(dev), angles, detector_width=wp)  # negated
    del volume
    phase = (-dv).to(torch.float64) * (interaction_constant(o.voltage_kv) * pixel_spacing)
    phase = phase - phase.mean(dim=(-2, -1), keepdim=True)

    ky = torch.fft.fftfreq(hp, d=pixel_spacing, device=dev, dtype=torch.float64).view(-1, 1)
    kx = torch.fft.fftfreq(wp, d=pixel_spacing, device=dev, dtype=torch.float64).view(1, -1)
    k = torch.sqrt(kx**2 + ky**2)
    transfer = ctf(k, o.defocus_um, o.voltage_kv, o.cs_mm, o.amplitude_contrast) * torch.exp(
        -o.b_factor * k**2 / 4.0
    )
    image = 1.0 + 2.0 * torch.fft.ifft2(torch.fft.fft2(phase) * transfer).real
    out: torch.Tensor = image[:, pad : pad + h, pad : pad + w].clamp_min(0.0)
    return out


def _beta_squared(voltage_kv: float) -> float:
    """``β² = (v/c)²`` of an electron accelerated by ``voltage_kv`` (rest energy 510.99895 keV)."""
    return 1.0 - 1.0 / (1.0 + voltage_kv / 510.99895) ** 2


def synth_reference(
    shape: tuple[int, int, int],
    angles_deg: Sequence[float] | np.ndarray,
    opts: SynthOptions = SynthOptions(),
    *,
    device: torch.device | str = "cpu",
    truth: dict[str, Any] | None = None,
) -> TiltSeries:
    """A physics-lite stand-in tilt-series (**not** a microscope; see :data:`STAND_IN_NOTE`).

    Image formation, per tilt θ (all in float64, deterministic for a seed on one device type):

    1. Phantom: :func:`synth_phantom`, a `(Z, H, W)` slab of potential contrast ΔV (volts),
       ``Z = thickness / pixel_spacing``, wider than the detector in X so that no tilted ray
       leaves it sideways; projected phase ``φ = σ_e · Δz · ∫ΔV`` with the
       relativistic interaction constant σ_e (:func:`interaction_constant`), using
       :func:`~.projection.project` (negated back). The mean phase per tilt is removed.
    2. Weak phase-amplitude object, linear image:
       ``I = 1 + 2 · F⁻¹[CTF(k) · E(k) · F[φ]]`` with the CTF of :func:`ctf`
       (relativistic λ from the voltage, Cs, amplitude contrast, Δf > 0 underfocus) and an
       envelope ``E = exp(−B k²/4)`` (``b_factor`` B in Å²); clipped at 0.
    3. Attenuation with tilt: mean intensity ``exp(−t / (λ_in cos θ))`` (zero-loss fraction of
       a slab of thickness t; λ_in = ``mean_free_path_nm`` at 300 kV, scaled by β² for other
       voltages).
    4. Shot noise: Poisson counts with mean ``dose/T · pixel_spacing²`` electrons per pixel per
       tilt (the total dose split evenly over the tilts) times the intensity.
    5. Detector: the analytic MTF of :func:`detector_mtf` (``nu_c = mtf_nu_c``) applied to the
       counts.

    The signal-to-noise ratio of tilt θ is defined on the output:
    ``SNR = var(MTF ⊛ expected) / var(MTF ⊛ (counts − expected))``, the variance of the
    noise-free image (expected counts) over that of the shot noise, both after the detector.

    Parameters
    ----------
    shape
        `(T, H, W)`; T must equal the number of angles.
    angles_deg
        Tilt angles in degrees.
    opts
        The microscope and the specimen (:class:`SynthOptions`).
    device
        Where the projection and the FFTs run.
    truth
        If given, filled with the per-tilt ground truth: ``snr`` (`(T,)`, as defined above),
        ``signal_var`` and ``noise_var`` (`(T,)`, counts²) and ``electrons_per_pixel`` (`(T,)`,
        the mean dose per pixel after attenuation).

    Returns
    -------
    TiltSeries
        `(T, H, W)` float32 electron counts per pixel after the MTF.
    """
    o = opts
    angles = _check_synth(shape, angles_deg, o)
    t_n, h, w = (int(s) for s in shape)
    rng = np.random.default_rng(o.seed)
    dev = torch.device(device)
    image = _synth_image((h, w), angles, o, rng, dev)
    mfp = o.mean_free_path_nm * _beta_squared(o.voltage_kv) / _beta_squared(300.0)
    cos_t = torch.as_tensor(np.cos(np.deg2rad(angles)), device=dev, dtype=torch.float64)
    attenuation = torch.exp(-o.thickness_nm / (mfp * cos_t)).view(-1, 1, 1)
    electrons = o.dose / t_n * o.pixel_spacing**2
    expected = (electrons * attenuation * image).cpu().numpy()
    counts = torch.from_numpy(rng.poisson(expected).astype(np.float64)).to(dev)
    mtf = torch.from_numpy(detector_mtf(h, w, o.mtf_nu_c)).to(dev)
    out = torch.fft.ifft2(torch.fft.fft2(counts) * mtf).real
    if truth is not None:
        clean = torch.fft.ifft2(torch.fft.fft2(torch.from_numpy(expected).to(dev)) * mtf).real
        signal_var = clean.var(dim=(-2, -1), correction=0).cpu().numpy()
        noise_var = (out - clean).var(dim=(-2, -1), correction=0).cpu().numpy()
        truth.update(
            snr=signal_var / noise_var,
            signal_var=signal_var,
            noise_var=noise_var,
            electrons_per_pixel=(electrons * attenuation).view(-1).cpu().numpy(),
        )
    return TiltSeries(out.to(torch.float32).cpu().numpy(), angles, float(o.pixel_spacing))


def synth_params(
    shape: tuple[int, int, int], angles_deg: Sequence[float] | np.ndarray, **kwargs: float | str
) -> SynthParams:
    """The :class:`SynthParams` record of a :func:`synth_reference` call (for provenance)."""
    defaults = {
        "pixel_spacing": 10.0,
        "defocus_um": 3.0,
        "voltage_kv": 300.0,
        "dose": 120.0,
        "seed": 0,
        "cs_mm": 2.7,
        "amplitude_contrast": 0.07,
        "thickness_nm": 150.0,
        "mean_free_path_nm": 350.0,
        "b_factor": 50.0,
        "phantom": "cell",
        "mtf_nu_c": 0.4,
    }
    unknown = set(kwargs) - set(defaults)
    if unknown:
        raise TypeError(f"unknown synth parameters: {sorted(unknown)}")
    defaults.update(kwargs)
    return SynthParams(
        shape=tuple(int(s) for s in shape),  # type: ignore[arg-type]
        angles_deg=[float(a) for a in np.asarray(angles_deg).reshape(-1)],
        **defaults,  # type: ignore[arg-type]
    )


def demo_reference(
    shape: tuple[int, int] | tuple[int, int, int],
    angles_deg: Sequence[float] | np.ndarray,
    pixel_spacing: float = 10.0,
    seed: int = 0,
) -> TiltSeries:
    """The built-in demo style reference: :func:`synth_reference` with its defaults.

    Deterministic for a given ``(shape, angles, pixel_spacing, seed)`` (computed on CPU).
    ``shape`` is `(H, W)` or `(T, H, W)` (T must then match the angles). A stand-in, not a
    microscope: see :data:`STAND_IN_NOTE`.
    """
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    if len(shape) == 2:
        full = (angles.size, int(shape[0]), int(shape[1]))
    elif len(shape) == 3:
        full = (int(shape[0]), int(shape[1]), int(shape[2]))
    else:
        raise InputError(f"demo reference shape {shape} must be (H, W) or (T, H, W)")
    opts = SynthOptions(pixel_spacing=pixel_spacing, seed=seed)
    return synth_reference(full, angles, opts, device="cpu")
