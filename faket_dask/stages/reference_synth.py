"""A physics-lite stand-in style reference, for when no real tilt-series is available.

:func:`synth_reference` images a random phantom (:func:`synth_phantom`) through the CTF of
:mod:`faket_dask.stages.ctf`, an envelope, attenuation with tilt, shot noise and an analytic
detector MTF (:func:`detector_mtf`); :func:`demo_reference` is the built-in demo reference. It
is not a microscope (:data:`STAND_IN_NOTE`): use a real reference
(:mod:`faket_dask.stages.reference`) for real work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from faket_dask.angles import validate_angles
from faket_dask.errors import InputError
from faket_dask.io.series import TiltSeries
from faket_dask.stages.ctf import ctf, electron_wavelength, interaction_constant
from faket_dask.stages.projection import project

STAND_IN_NOTE = (
    "physics-lite stand-in reference (random phantom, CTF, shot noise, detector MTF, "
    "attenuation with tilt), not data from a microscope"
)


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
