"""The sample builder: labeled crowded volumes ("grand models"), drawn once, rendered by slabs.

Two steps:

1. :func:`build_layout` draws everything a sample holds from ``(seed, sample_id)`` alone:
   vesicles and planar membrane discs, gold beads, then particles with uniform random
   orientations and non-overlapping positions. The result, a :class:`SampleLayout`, is small
   (a list of objects and the particle table); the volume does not exist yet.
2. :func:`render_slab` renders Y rows ``[y0, y1)`` of the density, the class mask and the
   instance mask. Each voxel's value depends only on the layout and the voxel, so slabs
   concatenate to the bytes of a whole rendering (:func:`build_sample`), and a
   (500, 3500, 3500) sample is never whole in memory: the projection consumes the slabs.

Randomness: ``numpy.random.default_rng`` streams keyed by SHA-256 of ``(seed, sample_id,
purpose)``. ``"sample"`` draws membranes, beads and every position, in that order;
``"classes"`` and ``"orientations"`` draw particle ``i``'s class (occupancy mode) and
orientation, in blocks, so a block's rotations run at once (on the host: a compiled kernel
with SciPy's bytes, in threads, ``FAKET_DASK_SAMPLE_THREADS``, default up to 8 cores; on a
device: batched in torch, the same voxels; :mod:`~faket_dask.stages.sample.rotation`) without
changing any draw;
``("solvent", plane)`` the solvent. With ``sample.orientation_grid: G``, class ``c`` has ``G``
orientations drawn from ``("orientation_grid", c)`` and rotated once, and a particle's
orientation draw picks one of them (its table row carries that orientation). A sample is a
pure function of the seed, its id and the config for a given :data:`BUILDER_VERSION`
(recorded in its attrs).

No overlap: every object's exact voxel mask (a rotated particle's voxels above its contour,
a membrane's shell, a bead's ball) is tested against an occupancy grid before the object is
accepted and then marked in it. The grid has one cell per voxel when it fits in
``OCCUPANCY_GRID_BYTES``, else one cell per ``b x b x b`` voxels (a cell is taken when any of
its voxels is): conservative, so voxel masks never overlap. Particles lie wholly inside the
volume; membranes and beads may be cut by its faces. Membranes and beads are placed one by one,
their voxels found as runs along X and tested and marked by compiled kernels
(:mod:`~faket_dask.stages.sample._shells`); particles in batched rounds
(:mod:`~faket_dask.stages.sample.placement`).

Counts: a class with ``count`` gets exactly that many particles (or an :class:`InputError`
when they cannot be placed). With ``sample.occupancy``, particles are drawn in sequence, each
drawing its class with probability proportional to the abundances, until their voxels cover
that fraction of the volume (counted classes included; membranes and beads excluded); the
sequence is then placed in blocks, the larger particles of a block first. Each particle keeps
its class and orientation until it is placed, so neither abundances nor orientations are
biased by crowding; if one cannot be placed anywhere, filling stops (``jammed``).

Densities (dense = positive): particles carry their template's density (mean
``density``, 1 by default, inside the contour); membranes are bilayers of ``thickness``
(at least one voxel) with head groups at ``density`` and a core at half of it
(``leaflets: false``: uniform); vesicle radii are mid-bilayer; planar segments are discs
with a random normal; beads are balls of ``fiducials.density``. The solvent, when on, fills
the background voxels only (unlabeled) with ``solvent * (1 + solvent_noise * n)`` clipped at
zero, ``n`` a smooth noise of correlation length ``solvent_correlation`` (a lattice
interpolated linearly, :func:`~faket_dask.stages.sample.render.solvent_rows`).

Labels: class ids are 1..K for the particle classes in config order, then ``membrane`` and
``fiducial`` (always assigned, so every sample of a dataset shares the mapping); 0 is
background. Instance ids are 1..N: particles, then membranes, then beads, the table's
``id``. The class mask is uint8 (uint16 above 255 classes), the instance mask uint32.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from faket_dask.config import ParticleClassConfig, SampleConfig
from faket_dask.errors import InputError
from faket_dask.stages.particles import (
    ParticleRows,
    table_from_arrays,
)
from faket_dask.stages.sample.grand_model import GrandModelLayout, import_grand_model
from faket_dask.stages.sample.objects import (
    _Bead,
    _BoxCache,
    _count_voxels,
    _Disc,
    _Object,
    _Particle,
    _quaternion_z_to,
    _Vesicle,
)
from faket_dask.stages.sample.placement import OccupancyGrid
from faket_dask.stages.sample.render import Renderer
from faket_dask.stages.sample.rotation import rotate_items
from faket_dask.stages.sample.sequence import draw_particles
from faket_dask.stages.sample.spec import FIDUCIAL, MEMBRANE, BuildSpec, _check_rows, keyed_rng
from faket_dask.stages.templates import Template, load_template

if TYPE_CHECKING:
    import torch


#: The sample builder's version (a sample's bytes change with it): 1 placed and rendered
#: particles one at a time; 2 places them in batched rounds and renders them in batches.
BUILDER_VERSION = 2
#: Candidate positions drawn at a time while placing one membrane or bead.
_BATCH = 32


@dataclass(eq=False)
class SampleLayout:
    """A drawn sample: its objects and particle table; rendered on demand by slabs.

    Attributes
    ----------
    spec
        What it was drawn from.
    shape, pixel_spacing
        ``(Z, Y, X)`` and Å per voxel.
    classes
        Class id -> name (1..K particle classes, then ``membrane`` and ``fiducial``).
    particles
        The particle table (:mod:`faket_dask.stages.particles`): particles, membranes, beads.
    templates
        Class name -> :class:`~faket_dask.stages.templates.Template`.
    info
        What was drawn: counts per class, occupancy reached, grid factor, ``jammed``.
    """

    spec: BuildSpec | None
    shape: tuple[int, int, int]
    pixel_spacing: float
    classes: dict[int, str]
    particles: pd.DataFrame
    templates: dict[str, Template] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    objects: list[_Object] = field(default_factory=list, repr=False)
    solvent: tuple[float, float, float] = (0.0, 0.0, 20.0)  # density, rel. std, corr. (Å)
    _cache: _BoxCache = field(default_factory=_BoxCache, repr=False)
    device: str | torch.device | None = field(default=None, repr=False)
    _renderer: Renderer | None = field(default=None, repr=False)
    _ylo: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    _yhi: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    @property
    def class_dtype(self) -> np.dtype:
        """uint8, or uint16 when there are more than 255 classes."""
        return np.dtype(np.uint8 if max(self.classes, default=0) < 256 else np.uint16)

    def _index(self) -> None:
        self._ylo = np.array([int(o.lo[1]) for o in self.objects], dtype=np.int64)
        self._yhi = np.array([int(o.hi[1]) for o in self.objects], dtype=np.int64)

    def render(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows ``[y0, y1)``: density (float32), class mask, instance mask (uint32)."""
        y0, y1 = _check_rows(y0, y1, self.shape[1])
        if len(self._ylo) != len(self.objects):
            self._index()
        if self._renderer is None:
            rotate = functools.partial(rotate_items, device=self.device)
            self._renderer = Renderer(self._cache, rotate)
        density, classes, instances = self._renderer.rows(self, y0, y1)
        return density, classes, instances

    def summary(self) -> dict[str, Any]:
        """A small JSON-ready description (for store attrs)."""
        return {
            "shape": list(self.shape),
            "pixel_spacing": self.pixel_spacing,
            "classes": {str(k): v for k, v in self.classes.items()},
            "seed": None if self.spec is None else self.spec.seed,
            "sample_id": None if self.spec is None else self.spec.sample_id,
            **self.info,
        }


def _class_table(cfg: SampleConfig) -> tuple[list[ParticleClassConfig], dict[int, str]]:
    classes = cfg.resolved_particles()
    ids = {i + 1: c.name for i, c in enumerate(classes)}
    ids[len(classes) + 1] = MEMBRANE
    ids[len(classes) + 2] = FIDUCIAL
    return classes, ids


def _place(
    occ: OccupancyGrid,
    rng: np.random.Generator,
    runs_at: Callable[[np.ndarray], np.ndarray],
    low: np.ndarray,
    high: np.ndarray,
    probe: np.ndarray | None,
    attempts: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Try up to ``attempts`` uniform integer positions in ``[low, high]``; first free wins.

    ``runs_at(pos)`` gives the object's mask at ``pos`` as runs (:meth:`_Object.runs`);
    ``probe`` is an offset from ``pos`` that lies inside the mask (a cheap first test), or None.
    Returns the position and its runs (marked on ``occ``).
    """
    tried = 0
    while tried < attempts:
        n = min(_BATCH, attempts - tried)
        cand = rng.integers(low, high + 1, size=(n, 3), dtype=np.int64)
        tried += n
        if probe is not None:
            cand = cand[~occ.taken(cand + probe)]
        for pos in cand:
            runs = runs_at(pos)
            if not len(runs):  # wholly outside the volume (a big shell)
                continue
            if occ.free_runs(runs):
                occ.mark_runs(runs)
                return pos, runs
    return None


def _place_object(
    occ: OccupancyGrid,
    rng: np.random.Generator,
    make: Callable[[np.ndarray], _Object],
    bounds: tuple[np.ndarray, np.ndarray],
    probe: np.ndarray | None,
    attempts: int,
    refusal: str,
) -> _Object:
    """The object ``make(pos)`` at the first free position :func:`_place` finds in ``bounds``.

    Raises :class:`InputError` with ``refusal`` when no position is free.
    """
    low, high = bounds
    placed = _place(occ, rng, lambda p: make(p).runs(), low, high, probe, attempts)
    if placed is None:
        raise InputError(refusal)
    return make(placed[0])


def _draw_membranes(
    spec: BuildSpec,
    rng: np.random.Generator,
    occ: OccupancyGrid,
    class_id: int,
) -> list[_Object]:
    cfg = spec.sample.membranes
    ps = spec.pixel_spacing
    shape = spec.shape
    half = max(cfg.thickness / 2.0 / ps, math.sqrt(3) / 2)  # at least one voxel thick
    attempts = spec.sample.placement_attempts
    everywhere = (np.zeros(3, np.int64), np.array(shape, dtype=np.int64) - 1)
    # what every membrane of this class shares, vesicle or planar
    common: dict[str, Any] = {
        "class_id": class_id,
        "half": half,
        "density": cfg.density,
        "leaflets": cfg.leaflets,
        "shape": shape,
    }
    out: list[_Object] = []
    for k in range(cfg.vesicles):
        radius = rng.uniform(*cfg.vesicle_radius) / ps

        def make(pos: np.ndarray, radius: float = radius) -> _Vesicle:
            return _Vesicle(centre=pos.astype(np.float64), radius=radius, **common)

        refusal = (
            f"could not place vesicle {k + 1} of {cfg.vesicles} without overlap; lower "
            "sample.membranes.vesicles or vesicle_radius, or enlarge the volume"
        )
        out.append(_place_object(occ, rng, make, everywhere, None, attempts, refusal))
    for k in range(cfg.planar):
        radius = rng.uniform(*cfg.planar_radius) / ps
        v = rng.standard_normal(3)
        normal = v / np.linalg.norm(v)

        def make_disc(
            pos: np.ndarray, radius: float = radius, normal: np.ndarray = normal
        ) -> _Disc:
            return _Disc(centre=pos.astype(np.float64), normal=normal, radius=radius, **common)

        refusal = (
            f"could not place planar membrane {k + 1} of {cfg.planar} without overlap; "
            "lower sample.membranes.planar or planar_radius, or enlarge the volume"
        )
        out.append(_place_object(occ, rng, make_disc, everywhere, None, attempts, refusal))
    return out


def _draw_beads(
    spec: BuildSpec, rng: np.random.Generator, occ: OccupancyGrid, class_id: int
) -> list[_Object]:
    cfg = spec.sample.fiducials
    ps = spec.pixel_spacing
    shape = spec.shape
    radius = cfg.radius / ps
    r_in = math.ceil(radius)
    low = np.full(3, r_in, dtype=np.int64)
    high = np.array(shape, dtype=np.int64) - 1 - r_in
    if cfg.count and np.any(high < low):
        raise InputError(
            f"gold beads of radius {cfg.radius} Å do not fit in a {shape} volume; "
            "lower sample.fiducials.radius or thicken the sample"
        )
    out: list[_Object] = []
    for k in range(cfg.count):

        def make(pos: np.ndarray) -> _Bead:
            return _Bead(
                class_id=class_id,
                centre=pos.astype(np.float64),
                radius=radius,
                density=cfg.density,
                shape=shape,
            )

        refusal = (
            f"could not place gold bead {k + 1} of {cfg.count} without overlap; lower "
            "sample.fiducials.count or enlarge the volume"
        )
        attempts = spec.sample.placement_attempts
        probe = np.zeros(3, np.int64)
        out.append(_place_object(occ, rng, make, (low, high), probe, attempts, refusal))
    return out


def _load_templates(spec: BuildSpec, classes: list[ParticleClassConfig]) -> dict[str, Template]:
    out = {}
    for c in classes:
        src = c.template if c.template.startswith("builtin:") else spec.resolve(c.template)
        try:
            out[c.name] = load_template(
                src,
                spec.pixel_spacing,
                name=c.name,
                threshold=c.threshold,
                density=c.density,
                source_pixel_spacing=c.pixel_spacing,
            )
        except InputError as err:
            raise InputError(f"particle class {c.name!r}: {err}") from None
    return out


def _import(spec: BuildSpec, volume: str) -> GrandModelLayout:
    """The grand model a config imports (``sample.grand_model`` and its masks and particles)."""
    cfg = spec.sample

    def path(value: str | None) -> str | None:
        return spec.resolve(value) if value else None

    return import_grand_model(
        spec.resolve(volume),
        class_mask=path(cfg.grand_model_class_mask),
        instance_mask=path(cfg.grand_model_instance_mask),
        particles=path(cfg.grand_model_particles),
        pixel_spacing=spec.pixel_spacing,
        class_names={i + 1: n for i, n in enumerate(cfg.grand_model_classes)} or None,
        expected_yx=spec.shape[1:],
    )


def _object_table(objects: list[_Object], class_ids: dict[int, str], ps: float) -> pd.DataFrame:
    """The particle table of every object: particles, then membranes, then beads (ids 1..N)."""
    n = len(objects)
    positions = np.zeros((n, 3))
    quats = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    radii = np.zeros(n)
    for i, o in enumerate(objects):
        if isinstance(o, _Particle):
            positions[i] = o.position[::-1]
            quats[i] = o.quaternion
        elif isinstance(o, _Vesicle | _Bead):
            positions[i] = o.centre[::-1]
            radii[i] = o.radius * ps
        elif isinstance(o, _Disc):
            positions[i] = o.centre[::-1]
            radii[i] = o.radius * ps
            quats[i] = _quaternion_z_to(o.normal[::-1])
    voxels = np.array([_count_voxels(o) for o in objects], dtype=np.int64)
    return table_from_arrays(
        ParticleRows(
            ids=np.arange(1, n + 1),
            class_ids=np.array([o.class_id for o in objects], dtype=np.int64),
            class_names=[class_ids[o.class_id] for o in objects],
            kinds=[o.kind for o in objects],
            positions_xyz=positions,
            quaternions=quats,
            pixel_spacing=ps,
            voxels=voxels,
            radii_angst=radii,
        )
    )


def build_layout(
    spec: BuildSpec, device: str | torch.device | None = None
) -> SampleLayout | GrandModelLayout:
    """Draw a sample's objects and particle table (no volume is rendered).

    An imported grand model (``sample.grand_model``) gives a :class:`GrandModelLayout`.
    Particles are rotated on ``device`` (default: the host, a compiled kernel with SciPy's
    bytes, in threads; a CUDA device: batched in torch, the same voxels,
    :mod:`~faket_dask.stages.sample.rotation`); the layout does not depend on it.

    Raises
    ------
    InputError
        A template cannot be read, an object does not fit, counts cannot be placed.
    """
    cfg = spec.sample
    if cfg.grand_model:
        return _import(spec, cfg.grand_model)
    nz, ny, nx = spec.shape
    if min(spec.shape) < 1:
        raise InputError(f"the sample volume {spec.shape} is empty")
    classes, class_ids = _class_table(cfg)
    membrane_id = len(classes) + 1
    fiducial_id = len(classes) + 2
    templates = _load_templates(spec, classes)
    rng = keyed_rng(spec.seed, spec.sample_id, "sample")
    occ = OccupancyGrid(spec.shape)
    cache = _BoxCache()
    info: dict[str, Any] = {"builder": BUILDER_VERSION, "occupancy_grid_factor": occ.b}
    membranes = _draw_membranes(spec, rng, occ, membrane_id)
    beads = _draw_beads(spec, rng, occ, fiducial_id)
    rotate = functools.partial(rotate_items, device=device)
    parts = draw_particles(spec, rng, occ, (classes, templates), cache, info, rotate, device)
    del occ
    objects: list[_Object] = [*parts, *membranes, *beads]
    ps = spec.pixel_spacing
    table = _object_table(objects, class_ids, ps)
    counts = table["class_name"].value_counts()
    info["counts"] = {name: int(counts.get(name, 0)) for name in class_ids.values()}
    layout = SampleLayout(
        spec=spec,
        shape=(nz, ny, nx),
        pixel_spacing=ps,
        classes=class_ids,
        particles=table,
        templates=templates,
        info=info,
        objects=objects,
        solvent=(cfg.solvent, cfg.solvent_noise, cfg.solvent_correlation),
        _cache=cache,
        device=device,
    )
    layout._index()
    return layout
