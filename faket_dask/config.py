"""One typed configuration model for a simulation, loaded from YAML and saved into every store.

Unknown keys and invalid values raise :class:`~faket_dask.errors.InputError` naming the key,
e.g. ``config key 'style.precison' is not known (did you mean 'precision'?)``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from faket_dask.angles import parse_angles
from faket_dask.errors import InputError

Modality = Literal["styled", "noisy", "content", "baseline", "noiseless"]
Precision = Literal["fp32", "tf32", "bf16"]
Device = Literal["auto", "cpu", "cuda"]


# Sane physical limits, checked when a config is read (before any work starts).
MAX_DETECTOR_PX = 16384
"""Largest detector side: above the 11520 x 8184 super-resolution frames of today's cameras."""
MAX_THICKNESS_VOXELS = 4096
"""Thickest sample volume (Z voxels)."""
MAX_PARTICLES_PER_CLASS = 100_000
"""Most copies of one particle class in one sample."""
MAX_SAMPLES = 1_000_000
"""Most samples in one store: sample folders are numbered with six digits (000000-999999)."""
BUILTIN_TEMPLATE_SHAPES = ("ribosome", "proteasome", "ring", "rod", "lshape", "sphere")
"""The built-in template shapes (faket_dask.stages.templates.BUILTIN_SHAPES; a test keeps
the two in step)."""


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are validated, instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TiltConfig(StrictModel):
    """Tilt geometry and detector."""

    angles: str | list[float] = Field(
        "-60:60:2",
        description="START:STOP:STEP (STOP included), a list of angles, or a .tlt/.rawtlt file.",
    )
    angle_choices: list[str | list[float]] = Field(
        default_factory=list,
        description="Domain randomisation: each sample draws one of these angle specs instead.",
    )
    shape: tuple[int, int] = Field((256, 256), description="Detector (H, W) in pixels; H is Y.")
    pixel_spacing: float = Field(10.0, gt=0, description="Pixel spacing in Å.")
    misalignment_px: float = Field(
        0.0, ge=0, description="Std of random per-tilt detector shifts in pixels (0: none)."
    )
    tilt_axis_deg: float | tuple[float, float] = Field(
        0.0,
        description="In-plane rotation of the tilt axis (deg, about the detector centre), or a "
        "(low, high) range each sample draws from.",
    )

    @field_validator("shape")
    @classmethod
    def _shape_positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 16:
            raise ValueError("detector shape must be at least 16 x 16 pixels (VGG-19 needs 16)")
        if max(v) > MAX_DETECTOR_PX:
            raise ValueError(
                f"detector shape {v[0]} x {v[1]} exceeds the limit of {MAX_DETECTOR_PX} pixels "
                "a side (larger than any camera); choose a smaller tilts.shape"
            )
        return v

    @field_validator("angles")
    @classmethod
    def _angles_parse(cls, v: str | list[float]) -> str | list[float]:

        if isinstance(v, str) and v.lower().endswith((".tlt", ".rawtlt")):
            return v  # a file is read when the simulation starts
        try:
            parse_angles(v)
        except InputError as err:
            raise ValueError(str(err)) from None
        return v


class ParticleClassConfig(StrictModel):
    """One particle class: a template and how many copies go into each sample.

    A class gets either an exact ``count`` per sample, or (with ``sample.occupancy``) a
    relative ``abundance``: each particle added until the occupancy is reached draws its
    class with probability proportional to the abundances (default 1 each).
    """

    name: str = Field(description="Class name (no spaces; not background/membrane/fiducial).")
    template: str = Field(
        description="'builtin:<shape>[:<scale>]' (shapes: ribosome, proteasome, ring, rod, "
        "lshape, sphere), 'example:peptide.pdb', a density map (.mrc/.map) or an atomic model "
        "(.pdb/.ent/.cif/.mmcif, also .gz; rendered as its Coulomb potential)."
    )
    count: int | None = Field(None, ge=0, description="Exact copies per sample.")
    abundance: float | None = Field(
        None, gt=0, description="Relative abundance when the sample targets an occupancy."
    )
    pixel_spacing: float | None = Field(
        None, gt=0, description="Pixel spacing (Å) of a template MRC (overrides its header)."
    )
    threshold: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Contour as a fraction of the template's maximum: voxels below it are "
        "not part of the particle (density and labels are cut there).",
    )
    density: float = Field(1.0, gt=0, description="Mean density inside the particle.")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v or any(c.isspace() for c in v):
            raise ValueError("a class name must be non-empty and contain no whitespace")
        if v.lower() in ("background", "membrane", "fiducial"):
            raise ValueError(f"{v!r} is reserved; choose another class name")
        return v

    @field_validator("template")
    @classmethod
    def _builtin_known(cls, v: str) -> str:
        if v.startswith("builtin:"):
            shape = v.split(":")[1]
            if shape not in BUILTIN_TEMPLATE_SHAPES:
                known = ", ".join(BUILTIN_TEMPLATE_SHAPES)
                raise ValueError(f"built-in template {shape!r} is not known; use one of: {known}")
        return v

    @field_validator("count")
    @classmethod
    def _count_sane(cls, v: int | None) -> int | None:
        if v is not None and v > MAX_PARTICLES_PER_CLASS:
            raise ValueError(
                f"count {v} exceeds the limit of {MAX_PARTICLES_PER_CLASS} copies of a class "
                "per sample; give fewer (or an abundance with sample.occupancy)"
            )
        return v

    @model_validator(mode="after")
    def _count_or_abundance(self) -> ParticleClassConfig:
        if self.count is not None and self.abundance is not None:
            raise ValueError(f"class {self.name!r}: give count or abundance, not both")
        return self


class MembraneConfig(StrictModel):
    """Vesicles (spherical shells) and planar membrane segments (discs), class 'membrane'."""

    vesicles: int = Field(0, ge=0, description="Number of vesicles (spherical bilayer shells).")
    vesicle_radius: tuple[float, float] = Field(
        (150.0, 400.0), description="Radius range (mid-bilayer), Å."
    )
    thickness: float = Field(40.0, gt=0, description="Bilayer thickness in Å.")
    leaflets: bool = Field(
        True, description="Two dense head-group layers with a lighter core (else uniform)."
    )
    planar: int = Field(0, ge=0, description="Number of planar membrane segments.")
    planar_radius: tuple[float, float] = Field(
        (300.0, 800.0), description="Radius range of the planar discs, Å."
    )
    density: float = Field(1.0, gt=0, description="Head-group (peak) density of the bilayer.")

    @field_validator("vesicle_radius", "planar_radius")
    @classmethod
    def _range_ok(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError("a radius range must be (low, high) with 0 < low <= high")
        return v


class FiducialConfig(StrictModel):
    """Gold fiducials (dense beads), class 'fiducial'."""

    count: int = Field(0, ge=0, description="Number of gold beads per sample.")
    radius: float = Field(50.0, gt=0, description="Bead radius in Å.")
    density: float = Field(5.0, gt=0, description="Bead density (protein is about 1).")


#: The demo particle mix used when ``sample.particles`` is empty: one class per built-in shape.
DEFAULT_PARTICLE_SHAPES = ("ribosome", "proteasome", "ring", "rod", "lshape", "sphere")
#: Target occupancy of the demo mix (and of a class list without counts and without occupancy).
DEFAULT_OCCUPANCY = 0.1


class SampleConfig(StrictModel):
    """The labeled volume ("grand model") that each sample projects.

    An empty ``particles`` list builds the demo mix: the six built-in shapes in equal
    abundance at ``occupancy`` (default 0.1; ``occupancy: 0`` for no particles at all).
    ``occupancy`` is the fraction of the volume's voxels covered by particles (membranes and
    fiducials excluded). See :mod:`faket_dask.stages.sample` for how samples are drawn.
    """

    thickness: int = Field(
        64, ge=4, le=MAX_THICKNESS_VOXELS, description="Volume Z extent in voxels."
    )
    particles: list[ParticleClassConfig] = Field(
        default_factory=list,
        description="Particle classes (ids 1, 2, ... in this order); empty: the demo mix of the "
        "six built-in shapes.",
    )
    occupancy: float | None = Field(
        None, ge=0, lt=0.6, description="Target particle volume fraction (with abundances)."
    )
    membranes: MembraneConfig = Field(
        default_factory=MembraneConfig, description="Vesicles and planar membranes."
    )
    fiducials: FiducialConfig = Field(
        default_factory=FiducialConfig, description="Gold fiducial beads."
    )
    solvent: float = Field(0.0, ge=0, description="Amorphous solvent background density (0: off).")
    solvent_noise: float = Field(
        0.3, ge=0, description="Std of the solvent's density fluctuation, relative to solvent."
    )
    solvent_correlation: float = Field(
        20.0, gt=0, description="Correlation length (Å) of the solvent fluctuation."
    )
    placement_attempts: int = Field(
        2000, ge=1, description="Random positions tried per object before giving up."
    )
    slab_size: int | None = Field(None, ge=1, description="Y rows rendered at a time.")
    orientation_grid: int | None = Field(
        None,
        ge=1,
        description="Rotations per particle class and sample: every particle takes one of "
        "this many uniform random orientations, each rotated once (fast for large samples). "
        "None: every particle its own orientation.",
    )
    grand_model: str | None = Field(
        None, description="Import: a volume MRC instead of building one (optionally masks)."
    )
    grand_model_class_mask: str | None = Field(None, description="Import: class-mask MRC.")
    grand_model_instance_mask: str | None = Field(None, description="Import: instance-mask MRC.")
    grand_model_particles: str | None = Field(
        None, description="Import: particle list (.star, .csv or SHREC particle_locations.txt)."
    )
    grand_model_classes: list[str] = Field(
        default_factory=list,
        description="Import: names of the class-mask labels 1, 2, ... (particles are matched "
        "to them by name).",
    )

    mixes: list[dict[str, float]] = Field(
        default_factory=list,
        description="Domain randomisation: particle mixes, each {class name: abundance (or count "
        "for classes given by count)}; every sample draws one. Classes keep their ids.",
    )

    @model_validator(mode="after")
    def _classes_ok(self) -> SampleConfig:
        names = [p.name for p in self.particles]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"particle class names must be unique; repeated: {', '.join(dup)}")
        for mix in self.mixes:
            unknown = sorted(set(mix) - set(names))
            if unknown:
                raise ValueError(
                    f"mix names unknown class {unknown[0]!r}; mixes refer to sample.particles by "
                    f"name ({', '.join(names) or 'none defined'})"
                )
            if any(v < 0 for v in mix.values()):
                raise ValueError("mix values are abundances or counts and must be >= 0")
        if self.occupancy is None:
            loose = [p.name for p in self.particles if p.count is None]
            if loose:
                raise ValueError(
                    f"class {loose[0]!r} has no count: give it a count or set sample.occupancy"
                )
        has_masks = self.grand_model_class_mask or self.grand_model_instance_mask
        extras = has_masks or self.grand_model_particles or self.grand_model_classes
        if extras and not self.grand_model:
            raise ValueError("grand_model_* files need sample.grand_model (the volume MRC)")
        return self

    def resolved_particles(self) -> list[ParticleClassConfig]:
        """The particle classes to build: the configured ones, or the demo mix if empty."""
        if self.particles:
            return list(self.particles)
        return [
            ParticleClassConfig(name=s, template=f"builtin:{s}", abundance=1.0)
            for s in DEFAULT_PARTICLE_SHAPES
        ]

    def resolved_occupancy(self) -> float | None:
        """The target occupancy (the demo default when the particle list is empty)."""
        if self.occupancy is None and not self.particles:
            return DEFAULT_OCCUPANCY
        return self.occupancy


def apply_mix(sample: SampleConfig, mix: dict[str, float]) -> SampleConfig:
    """The sample section with one particle mix applied (abundance, or count for counted classes).

    Class order and names stay, so class ids are the same in every sample of a dataset.
    """
    particles = []
    for p in sample.particles:
        if p.name not in mix:
            particles.append(p)
        elif p.count is not None:
            particles.append(p.model_copy(update={"count": round(mix[p.name])}))
        else:
            particles.append(p.model_copy(update={"abundance": mix[p.name] or None, "count": None}))
    return sample.model_copy(update={"particles": particles})


class NoiseConfig(StrictModel):
    """The tilt-dependent noise model (FakET §1.3–1.4)."""

    model: str | None = Field(
        None,
        description="noise.json from `faket-dask noise fit`; 'demo' or none: built-in; "
        "'calibrated': the reference microscope's CTF and noise spectrum (noise.calibration).",
    )
    calibration: str | None = Field(
        None,
        description="With model 'calibrated': micro.json from `faket-dask reference calibrate`; "
        "none: calibrate the (first) style reference at the start of the run.",
    )
    models: list[str] = Field(
        default_factory=list, description="Domain randomisation: each sample draws one model."
    )
    snr: float | tuple[float, float] | None = Field(
        None, description="Override the model's r/sigma by an SNR, or an SNR range to draw from."
    )
    rng: Literal["keyed", "faket"] = Field(
        "keyed",
        description="'keyed': per-tilt streams keyed by (seed, sample, tilt). 'faket': the "
        "reference's numpy draw of the whole series, seeded per sample with [sample_id, seed] "
        "(dataset seed 0: sample N draws default_rng(N), the reference's tomogram N).",
    )
    content_factor: float = Field(0.25, gt=0, description="CONTENT noise std relative to NOISY.")
    intensity_match: Literal["moments", "quantiles"] | None = Field(
        None,
        description="With model 'calibrated': how FAKET's tilts take the intensities of the "
        "style tilt they were styled with (reference A, never a held-out one). 'moments': its "
        "mean and std, as FakET; 'quantiles' (none: the default): its whole histogram, by a "
        "per-tilt monotone quantile map that keeps every pixel's rank (the labels stay aligned; "
        "the sample's own intensity distribution is replaced by the microscope's).",
    )

    @model_validator(mode="after")
    def _calibrated(self) -> NoiseConfig:
        if self.model == "calibrated":
            if self.models:
                raise ValueError("model 'calibrated' cannot be mixed with noise.models")
            if self.snr is not None:
                raise ValueError("model 'calibrated' measures the SNR; drop noise.snr")
            if self.rng != "keyed":
                raise ValueError("model 'calibrated' draws keyed streams; drop noise.rng")
        elif self.calibration is not None:
            raise ValueError("noise.calibration needs noise.model: calibrated")
        elif self.intensity_match is not None:
            raise ValueError("noise.intensity_match needs noise.model: calibrated")
        return self

    @field_validator("snr")
    @classmethod
    def _snr_positive(
        cls, v: float | tuple[float, float] | None
    ) -> float | tuple[float, float] | None:
        values = () if v is None else (v,) if isinstance(v, int | float) else tuple(v)
        if any(not (math.isfinite(x) and x > 0) for x in values):
            raise ValueError(f"snr {v} must be positive and finite (signal over noise power)")
        if len(values) == 2 and values[0] > values[1]:
            raise ValueError(f"snr range {v} must be (low, high) with low <= high")
        return v


class StyleConfig(StrictModel):
    """FakET's one-step neural style transfer (FakET §1.5)."""

    enabled: bool = Field(
        True, description="Run the style transfer (needed for the 'styled' modality)."
    )
    reference: str = Field("demo", description="Style tilt-series (MRC/Zarr), or 'demo'.")
    references: list[str] = Field(
        default_factory=list, description="Domain randomisation: each sample draws one reference."
    )
    weights: str = Field("imagenet", description="'imagenet', 'random' or a state-dict path.")
    weights_fallback: Literal["error", "random"] = Field(
        "error", description="What to do when ImageNet weights cannot be had."
    )
    precision: Precision = Field(
        "fp32",
        description="Convolution precision: 'fp32' exact, 'tf32' or 'bf16' faster on GPUs "
        "(docs/performance.md has their fidelity).",
    )
    deterministic: bool = Field(
        False,
        description="On CUDA: deterministic kernels (identical bytes across runs, slower); "
        "CPU results are deterministic per thread count anyway.",
    )
    batch_size: int | Literal["auto"] = Field(
        "auto",
        description="Tilts per style batch; 'auto' sizes it from free GPU memory (an "
        "out-of-memory batch is halved and retried).",
    )
    device: Device = Field(
        "auto", description="Where style transfer runs: 'auto' (CUDA if present), 'cpu', 'cuda'."
    )


class ReconstructionConfig(StrictModel):
    """Optional tomogram by weighted back-projection (FakET §1.6)."""

    enabled: bool = Field(False, description="Reconstruct a tomogram per sample.")
    bin: int = Field(
        2,
        ge=1,
        description="Binning of the tilts before back-projection: their cubic spline sampled "
        "at the centres of b x b blocks (no anti-alias prefilter).",
    )
    filter: Literal["ramp", "approxShrec"] = Field(
        "approxShrec",
        description="Weighting filter: 'approxShrec' (FakET's SHREC-like filter) or 'ramp' "
        "(scikit-image iradon's padded Ram-Lak).",
    )
    thickness: int | None = Field(None, ge=1, description="Z thickness in binned voxels.")


_DEFAULT_MODALITIES: tuple[Modality, ...] = ("styled", "noisy", "noiseless")


class OutputConfig(StrictModel):
    """What each sample stores."""

    modalities: list[Modality] = Field(
        default_factory=lambda: list(_DEFAULT_MODALITIES),
        description="Tilt stacks stored per sample: styled, noisy, content, baseline, noiseless.",
    )
    save_volume: bool = Field(True, description="Store class and instance masks.")
    save_density: bool = Field(False, description="Also store the density volume.")
    dtype: Literal["float32", "float16"] = Field(
        "float32", description="Data type of the stored tilt stacks and tomograms."
    )
    tilts_per_shard: int = Field(
        8, ge=1, description="Tilts per Zarr shard (fixed, not the batch)."
    )
    chunk: int = Field(512, ge=16, description="Inner chunk edge (pixels) within a shard.")

    @field_validator("modalities")
    @classmethod
    def _unique(cls, v: list[Modality]) -> list[Modality]:
        if not v:
            raise ValueError("at least one modality must be saved")
        if len(set(v)) != len(v):
            raise ValueError("modalities are listed twice")
        return v


class SimulationConfig(StrictModel):
    """Everything that defines a dataset: a sample is a pure function of (seed, id, config)."""

    seed: int = Field(
        0, ge=0, description="Dataset seed: with the sample id it keys every random draw."
    )
    n_samples: int = Field(
        1,
        ge=1,
        le=MAX_SAMPLES,
        description="Samples in the dataset (ids 0 .. n-1; --n-samples overrides).",
    )
    tilts: TiltConfig = Field(
        default_factory=TiltConfig, description="Tilt angles, detector shape, pixel spacing."
    )
    sample: SampleConfig = Field(
        default_factory=SampleConfig, description="The labeled volume each sample projects."
    )
    noise: NoiseConfig = Field(
        default_factory=NoiseConfig, description="The tilt-dependent noise model."
    )
    style: StyleConfig = Field(
        default_factory=StyleConfig, description="FakET's neural style transfer."
    )
    reconstruction: ReconstructionConfig = Field(
        default_factory=ReconstructionConfig, description="Optional tomogram per sample."
    )
    output: OutputConfig = Field(
        default_factory=OutputConfig, description="What each sample stores, and how."
    )

    @model_validator(mode="after")
    def _styled_needs_style(self) -> SimulationConfig:
        if "styled" in self.output.modalities and not self.style.enabled:
            raise ValueError("output.modalities lists 'styled' but style.enabled is false")
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists)."""
        return json.loads(self.model_dump_json())

    def digest(self) -> str:
        """SHA-256 of the canonical JSON: equal digests mean equal configs."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _known_keys(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The field names of the sub-model that ``loc`` points into."""
    current: type[BaseModel] = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args]
        sub = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if sub is None:
            return []
        current = sub
    return list(current.model_fields)


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> str:
    """One line naming the first bad key and what to do about it."""
    first = err.errors()[0]
    loc = tuple(first["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    if first["type"] == "extra_forbidden":
        known = _known_keys(model, loc)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
        return f"{source}: config key {key!r} is not known ({hint})"
    msg = first["msg"]
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    more = len(err.errors()) - 1
    extra = f"; {more} more problem(s)" if more else ""
    return f"{source}: config key {key!r} is invalid: {msg}{shown}{extra}"


def config_from_dict(data: dict[str, Any], *, source: str = "config") -> SimulationConfig:
    """Validate a plain dict into a :class:`SimulationConfig`."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: a config must be a mapping of keys to values")
    try:
        return SimulationConfig.model_validate(data)
    except ValidationError as err:
        raise InputError(format_validation_error(err, SimulationConfig, source)) from None


def _set_key(data: dict[str, Any], dotted: str, value: Any, text: str) -> None:
    """Set ``data[a][b][i]... = value`` for ``dotted = "a.b.i..."`` (list items by index)."""
    parts = dotted.split(".")
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise InputError(
                    f"--override {text}: {where} is not an item of a {len(node)}-item list"
                )
            key: Any = int(part)
        elif isinstance(node, dict):
            key = part
        else:
            raise InputError(f"--override {text}: {'.'.join(parts[:depth])} is not a section")
        if last:
            node[key] = value
        else:
            current = node[key] if isinstance(node, list) else node.get(key)
            if current is None:
                node[key] = {}
            elif not isinstance(current, dict | list):
                raise InputError(f"--override {text}: {where} is a value, not a section")
            node = node[key]


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A config dict with ``KEY=VALUE`` overrides applied (``generate --override``).

    ``KEY`` is dotted (``tilts.shape``, ``sample.particles.0.count``: list items by index);
    ``VALUE`` is YAML (``[64, 64]``, ``0.5``, ``-60:60:30``). The result is validated like a
    config file, so an unknown key is named.

    Raises
    ------
    InputError
        An override is not ``KEY=VALUE`` or points through a value that is not a section.
    """
    out = json.loads(json.dumps(data))
    for text in overrides:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise InputError(f"--override {text!r}: write KEY=VALUE, e.g. tilts.shape=[64,64]")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise InputError(f"--override {text}: the value is not valid YAML") from None
        _set_key(out, key, value, text)
    return out


def load_config(
    path: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> SimulationConfig:
    """Load a YAML (or JSON) config file, with optional ``KEY=VALUE`` overrides.

    Raises
    ------
    InputError
        The file is missing, not YAML, or has an unknown or invalid key.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"config file {path} is a directory; pass a YAML file with -c")
    if not path.is_file():
        raise InputError(f"config file {path} does not exist; pass a YAML file with -c")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"config file {path} is not text (binary?); pass a YAML file") from None
    except OSError as err:
        raise InputError(f"config file {path} cannot be read: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{path}: not valid YAML{where}; check the indentation") from None
    if data is None:
        raise InputError(
            f"config file {path} is empty; write the settings to change (`faket-dask generate "
            "--demo small --dry-run` shows a plan; docs/config.md lists every key)"
        )
    if overrides:
        if not isinstance(data, dict):
            raise InputError(f"{path}: a config must be a mapping of keys to values")
        data = apply_overrides(data, overrides)
        return config_from_dict(data, source=f"{path} with --override")
    return config_from_dict(data, source=str(path))


def save_config(config: SimulationConfig, path: str | Path) -> None:
    """Write a config as YAML that :func:`load_config` reads back to an equal model."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def angle_specs(config: SimulationConfig) -> list[Any]:
    """The tilt-angle specs that samples draw from (one unless ``tilts.angle_choices``)."""
    return list(config.tilts.angle_choices) or [config.tilts.angles]


def union_angles(config: SimulationConfig) -> np.ndarray:
    """All tilt angles any sample may use (sorted, unique): the demo inputs cover them."""
    specs = angle_specs(config)
    allv = np.concatenate([np.asarray(parse_angles(s), dtype=np.float64) for s in specs])
    return np.unique(np.round(allv, 6))
