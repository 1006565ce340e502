"""One sample, end to end: ``simulate_sample(spec) -> summary``. No Dask in here.

A sample is a pure function of (dataset seed, sample id, config) and the shared inputs the
client resolved once (weights, style references, noise models)::

    draw      what this sample uses, from a stream keyed by (seed, sample id): tilt angles,
              style reference, noise model, SNR, tilt-axis angle, per-tilt shifts
    build     volume + class mask + instance mask + particle table (slab by slab)
    project   noiseless tilts (T, H, W), slab by slab along Y
    misalign  optional tilt-axis rotation and per-tilt shifts of the noiseless tilts
    noise     NOISY, CONTENT (same draw, 0.25x sigma), BASELINE as asked
    style     FakET: init=NOISY, content=CONTENT, style=the drawn reference's matching tilts;
              VGG-19 loaded once per process, style Gram matrices cached per process
    recon     optional tomogram (weighted back-projection) with binned masks
    write     samples/<id>/ in the store, whole shards, the ``complete`` marker last

The returned summary is small (checksums, statistics, timings, what was drawn, the device) and
goes to the client, which appends it to the manifest.

Fault-injection hook (tests and drills; never set in production): ``SampleSpec.fault``, set by
the runner from ``$FAKET_DASK_FAULT``, is a ``;``-separated list of ``fail:ID,ID`` (raise
``RuntimeError`` for those samples), ``exit:ID,ID`` (kill the worker process with
``os._exit(1)`` while computing those samples) and ``sleep:SECONDS`` (sleep before writing
each sample).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import math
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from faket_dask.config import SimulationConfig, apply_mix
from faket_dask.errors import InputError
from faket_dask.io import store as st
from faket_dask.io import writers as wr
from faket_dask.io.jsonable import jsonable
from faket_dask.io.multiscale import write_grid_multiscale
from faket_dask.pipeline.draw import SampleDraw, SampleSpec, _apply_fault, draw
from faket_dask.pipeline.overlap import Background, device_lock, read_ahead
from faket_dask.pipeline.worker_cache import (
    _load_calibration,
    _load_noise_model,
    _load_reference,
    deterministic_mode,
    get_style_model,
    gram_cache,
    resolve_device,
)
from faket_dask.stages.calibrated_noise import (
    CalibratedNoiseOptions,
    apply_calibrated_noise,
    apply_detector,
    match_quantiles,
)
from faket_dask.stages.noise import STATS, Curves, NoiseModel
from faket_dask.stages.noise_apply import NoiseDraw, apply_noise
from faket_dask.stages.particles import table_record
from faket_dask.stages.projection import project_slab
from faket_dask.stages.reconstruction import Centring, bin_volume_labels, reconstruct
from faket_dask.stages.sample import BuildSpec, build_layout, default_slab_size, iter_slabs
from faket_dask.stages.style import StyleRun, style_transfer

NOISE_MODALITIES = ("noisy", "content", "baseline")

CALIBRATED_TRANSFER = {
    "optics": "CTF and envelope on the projection, before the noise",
    "detector": "MTF = sqrt(B / B(0)) of the calibrated noise spectrum, last: on NOISY, "
    "CONTENT and BASELINE after the noise, on FAKET after the style step",
}
"""What the calibrated noise model applied (the ``transfer`` attribute of ``tilts``)."""


def _noise(
    spec: SampleSpec,
    drew: SampleDraw,
    noiseless: torch.Tensor,
    angles: np.ndarray,
    modalities: Sequence[str],
) -> dict[str, torch.Tensor]:
    """NOISY/CONTENT/BASELINE by FakET's model, or by the calibrated one."""
    cfg = spec.config
    entry = spec.inputs.noise_models[drew.noise_model]
    if entry.get("spec") == "calibrated":
        options = CalibratedNoiseOptions(
            modalities=tuple(modalities),
            content_factor=cfg.noise.content_factor,
            pixel_spacing=cfg.tilts.pixel_spacing,
            before_detector="styled" in cfg.output.modalities,
        )
        calibration = _load_calibration(entry["path"])
        return apply_calibrated_noise(
            noiseless, calibration, angles, spec.seed, spec.sample_id, options
        )
    model = _load_noise_model(entry["path"])
    if drew.snr is not None:
        model = _with_snr(model, drew.snr)
    return apply_noise(
        noiseless,
        model,
        angles,
        spec.seed,
        spec.sample_id,
        NoiseDraw(
            rng=cfg.noise.rng, modalities=modalities, content_factor=cfg.noise.content_factor
        ),
    )


def _calibrated(spec: SampleSpec, drew: SampleDraw) -> bool:
    """Whether the sample's drawn noise model is the calibrated one."""
    models, i = spec.inputs.noise_models, drew.noise_model
    return i < len(models) and models[i].get("spec") == "calibrated"


def _with_snr(model: NoiseModel, snr: float) -> NoiseModel:
    """The model with r and sigma replaced by an SNR's (mean and std curves kept)."""
    r = float(np.sqrt(snr / (1.0 + snr)))
    s = float(np.sqrt(1.0 / (1.0 + snr)))
    n = model.n_tilts

    def patch(c: Any, length: int, coeffs: bool) -> Any:
        values = {k: np.asarray(c.array(k), dtype=np.float64) for k in STATS}
        for k, v in (("r", r), ("sigma", s)):
            if coeffs:
                arr = np.zeros(length)
                arr[-1] = v
                values[k] = arr
            else:
                values[k] = np.full(length, v)
        return Curves.from_arrays(values)

    return model.model_copy(
        update={
            "fit": patch(model.fit, n, False),
            "baseline": patch(model.baseline, n, False),
            "fit_coefficients": patch(model.fit_coefficients, model.degree + 1, True),
            "baseline_coefficients": patch(model.baseline_coefficients, 1, True),
            "provenance": {**model.provenance, "snr_override": snr},
        }
    )


def _misalign(
    tilts: torch.Tensor, axis_deg: float, shifts: Sequence[Sequence[float]] | None
) -> torch.Tensor:
    """Rotate each tilt `(T, H, W)` about its centre by ``axis_deg``, shift it by ``shifts[t]``."""
    if not axis_deg and shifts is None:
        return tilts
    arr = tilts.detach().cpu().numpy()
    out = np.empty_like(arr)
    h, w = arr.shape[1:]
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    th = np.deg2rad(axis_deg)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    for t in range(arr.shape[0]):
        shift = np.asarray(shifts[t], dtype=np.float64) if shifts is not None else np.zeros(2)
        # output p -> input rot @ (p - centre - shift) + centre
        offset = centre - rot @ (centre + shift)
        out[t] = ndimage.affine_transform(arr[t], rot, offset=offset, order=1, mode="nearest")
    return torch.from_numpy(out).to(tilts.device)


def _style_stack(
    ref: np.ndarray, ref_angles: np.ndarray | None, angles: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The reference tilts that style each sample tilt: the nearest angle (or by index)."""
    if ref_angles is None or ref_angles.size != ref.shape[0]:
        if ref.shape[0] != angles.size:
            raise InputError(
                f"the style reference has {ref.shape[0]} tilts and no angles, the sample "
                f"{angles.size}: give the reference a .tlt"
            )
        idx = np.arange(angles.size)
    else:
        idx = np.abs(ref_angles[None, :] - angles[:, None]).argmin(axis=1)
    return ref[idx], idx


def _stats(x: np.ndarray) -> dict[str, float]:
    x64 = x.astype(np.float64, copy=False)
    return {
        "mean": float(x64.mean()),
        "std": float(x64.std()),
        "min": float(x64.min()),
        "max": float(x64.max()),
    }


class _Timer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = round(self.times.get(name, 0.0) + time.perf_counter() - t0, 4)


def simulate_sample(spec: SampleSpec) -> dict[str, Any]:
    """Compute one sample and write it into the store; return its small summary.

    The stored bytes depend only on (seed, sample id, config, shared inputs) for a given device
    type, library versions and precision. Safe to run twice (execution is at least once): a
    complete sample is not recomputed (its stored summary is returned), an incomplete one is
    deleted and written again.
    """
    t_start = time.perf_counter()
    _apply_fault(spec, "start")
    existing = st.read_sample_attrs(spec.store, spec.sample_id)
    if existing and existing.get("complete") is True and existing.get("summary"):
        summary = dict(existing["summary"])
        summary["reused"] = True
        return summary
    drew = draw(spec)
    record = drew.to_dict()  # what the sample's attributes and summary store
    device = resolve_device(spec.config.style.device)
    group = st.prepare_sample(
        spec.store,
        spec.sample_id,
        {"seed": int(spec.seed), "run_id": spec.run_id, "drew": record, "started_at": _now()},
    )
    # Writes run on a writer thread while the device works on the next stage: the volume's
    # checksum read-back and the noiseless tilts during the noise, those during the style
    # transfer, and so on. Each array is written by the same calls as without overlap.
    with Background(max_pending=len(spec.config.output.modalities) + 3) as bg:
        run = _SampleRun(spec, drew, device, group, bg)
        built = run.build_and_project()
        run.add_noise()
        run.add_style()
        tomogram = run.reconstruct()
        _apply_fault(spec, "write")
        checksums = run.finish_writes(built, tomogram)
    run.timer.times["writer_busy"] = round(bg.busy_s, 4)
    stats = {m: run.saved[m].result() for m in run.modalities}
    run.timer.times["total"] = round(time.perf_counter() - t_start, 4)
    summary = {
        "sample_id": int(spec.sample_id),
        "status": "ok",
        "seed": int(spec.seed),
        "drew": record,
        "layout": built.layout_info,
        "n_particles": built.n_particles,
        "checksums": checksums,
        "stats": stats,
        "timings": dict(run.timer.times),
        "device": device,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "run_id": spec.run_id,
        "finished_at": _now(),
    }
    st.mark_complete(group, {"summary": summary, "checksums": checksums})
    return summary


class _SampleRun:
    """One sample's stages in order on ``device``; its writes go to the writer thread ``bg``.

    ``stacks`` holds the `(T, H, W)` tensors by modality; ``saved`` the statistics of each
    stack written (futures of the writer thread).
    """

    def __init__(
        self, spec: SampleSpec, drew: SampleDraw, device: str, group: Any, bg: Background
    ) -> None:
        self.spec = spec
        self.cfg: SimulationConfig = spec.config
        self.drew = drew
        self.angles = np.asarray(drew.angles, dtype=np.float64)
        self.device = device
        self.modalities = list(self.cfg.output.modalities)
        self.group = group
        self.bg = bg
        self.lock = device_lock(device)
        self.timer = _Timer()
        self.stacks: dict[str, torch.Tensor] = {}
        self.saved: dict[str, Future[dict[str, float]]] = {}  # modality -> its statistics
        self.tilts: Any = None

    def save(self, names: Sequence[str]) -> None:
        """Hand the stacks ``names`` (those the config stores) to the writer thread."""
        for m in names:
            if m in self.modalities and m not in self.saved:
                arr = np.ascontiguousarray(self.stacks[m].detach().cpu().numpy(), dtype=np.float32)
                self.saved[m] = self.bg.submit(_save_stack, self.tilts, m, arr)

    def build_and_project(self) -> _Built:
        """The volume and labels (written), the noiseless tilts (misaligned as drawn)."""
        with self.timer("build+project"):
            built = _build_and_project(
                self.spec, self.group, self.angles, self.device, self.drew.particle_mix, self.bg
            )
        with self.lock, self.timer("misalign"):
            noiseless = _misalign(built.noiseless, self.drew.tilt_axis_deg, self.drew.shifts_px)
        self.stacks["noiseless"] = noiseless
        t, h, w = (int(v) for v in noiseless.shape)
        self.tilts = _tilts_writer(
            self.spec, self.group, self.drew, self.modalities, (t, h, w), self.angles
        )
        self.save(["noiseless"])
        return built

    def add_noise(self) -> None:
        """NOISY, CONTENT and BASELINE as stored or as the style transfer needs them."""
        styled = "styled" in self.modalities
        need: list[Any] = [m for m in NOISE_MODALITIES if m in self.modalities]
        if styled:
            need = [m for m in NOISE_MODALITIES if m in need or m in ("noisy", "content")]
        if not need:
            return
        spec, drew = self.spec, self.drew
        with self.lock, self.timer("noise"):
            noiseless = self.stacks["noiseless"]
            self.stacks.update(_noise(spec, drew, noiseless, self.angles, need))
        self.save(need)

    def add_style(self) -> None:
        """FAKET, when the config stores it."""
        if "styled" in self.modalities:
            with self.lock, self.timer("style"):
                self.stacks["styled"] = _style(
                    self.spec, self.drew, self.angles, self.stacks, self.device
                )
            self.save(["styled"])

    def reconstruct(self) -> dict[str, Any] | None:
        """The tomogram, when the config asks for one."""
        if not self.cfg.reconstruction.enabled:
            return None
        with self.lock, self.timer("reconstruct"):
            return _reconstruct(self.cfg, self.angles, self.stacks, self.modalities, self.device)

    def finish_writes(self, built: _Built, tomogram: dict[str, Any] | None) -> dict[str, str]:
        """Write the tomogram, wait for every write; the checksums of all arrays."""
        with self.timer("write"):
            checksums = dict(built.checksums)
            for pending in built.pending:
                checksums.update(pending.result())
            tomo_sums: Future[dict[str, str]] | None = None
            if tomogram is not None:
                tomo_sums = self.bg.submit(_write_tomogram, self.spec, self.group, tomogram, built)
            self.bg.wait()
            checksums.update({f"tilts/{k}": v for k, v in self.tilts.checksums().items()})
            if tomo_sums is not None:
                checksums.update(tomo_sums.result())
        return checksums


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class _Built:
    noiseless: Any  # torch (T, H, W) float32 on the device
    checksums: dict[str, str]
    pending: list[Future[dict[str, str]]]  # checksums still being computed on the writer thread
    binned_masks: dict[str, np.ndarray]  # (Z // b, Y // b, X // b) when reconstructing
    shape: tuple[int, int, int]
    n_particles: int
    layout_info: dict[str, Any]


def _slab_rows(ny: int, nz: int, nx: int, cfg: SimulationConfig) -> int:
    """Y rows per slab: the config's, else about 256 MiB, a multiple of 128 (and of the bin)."""
    rows = cfg.sample.slab_size or default_slab_size((nz, ny, nx))
    if rows >= ny:
        return ny
    step = 128
    b = cfg.reconstruction.bin if cfg.reconstruction.enabled else 1
    step = step * b // math.gcd(step, b)
    return max(step, (rows // step) * step) if step < ny else ny


def _build_and_project(
    spec: SampleSpec,
    group: Any,
    angles: np.ndarray,
    device: str,
    mix: int | None,
    later: Background,
) -> _Built:
    """Draw the layout, render it slab by slab, project each slab and store the labels.

    ``mix`` is the drawn particle mix (an index into ``sample.mixes``), or ``None``. The
    volume's checksums (a read-back of what was stored) are left to ``later``, the sample's
    writer thread.
    """
    cfg = spec.config
    if mix is not None:
        cfg = cfg.model_copy(update={"sample": apply_mix(cfg.sample, cfg.sample.mixes[mix])})
    layout = build_layout(  # particles rotated on the device (the same voxels as the host)
        BuildSpec.from_config(cfg, spec.sample_id, seed=spec.seed, base_dir=spec.base_dir),
        device=device,
    )
    nz, ny, nx = layout.shape
    w = int(cfg.tilts.shape[1])
    rows = _slab_rows(ny, nz, nx, cfg)
    noiseless = torch.empty((angles.size, ny, w), dtype=torch.float32, device=device)
    sink = _SlabSink(group, layout, cfg, rows)
    # The next slab renders (CPU) while this one projects (device); slabs are written and
    # binned on a writer thread, in order. Same calls per slab, so the same bytes.
    with Background(max_pending=2) as bg:
        for y0, y1, dens, cls, inst in read_ahead(iter_slabs(layout, rows, device)):
            with device_lock(device):
                noiseless[:, y0:y1] = project_slab(dens, angles, w, check_finite=False)
            if sink.wants_slabs:
                bg.submit(sink.store_slab, y0, sink.slabs(dens, cls, inst))
    pending = []
    if sink.writer is not None:
        ps = float(layout.pixel_spacing)
        pending = [later.submit(_volume_checksums, sink.writer, ps, dict(layout.classes))]
    table = layout.particles
    checksums = _write_particles(spec, group, layout)
    masks = {k: np.concatenate(v, axis=1) for k, v in sink.binned.items() if v}
    n_particles = int((table["kind"] == "particle").sum()) if "kind" in table else len(table)
    info = jsonable(layout.summary())
    return _Built(noiseless, checksums, pending, masks, (nz, ny, nx), n_particles, info)


class _SlabSink:
    """Where the rendered slabs go: the ``volume`` group (masks, density) and binned masks."""

    def __init__(self, group: Any, layout: Any, cfg: SimulationConfig, rows: int) -> None:
        self.dtypes: dict[str, Any] = {}
        if cfg.output.save_volume:
            self.dtypes |= {"class_mask": layout.class_dtype, "instance_mask": np.uint32}
        if cfg.output.save_density:
            self.dtypes["density"] = np.float32
        self.writer: Any = None
        if cfg.output.save_volume or cfg.output.save_density:
            self.writer = wr.GridWriter(
                group,
                "volume",
                tuple(layout.shape),
                self.dtypes,
                float(layout.pixel_spacing),
                rows=rows,
                attrs={"classes": {str(k): v for k, v in layout.classes.items()}},
            )
        self.bin = int(cfg.reconstruction.bin) if cfg.reconstruction.enabled else 0
        self.binned: dict[str, list[Any]] = {"class_mask": [], "instance_mask": []}

    @property
    def wants_slabs(self) -> bool:
        """Whether slabs are stored or binned at all."""
        return self.writer is not None or bool(self.bin)

    def slabs(self, dens: Any, cls: np.ndarray, inst: np.ndarray) -> dict[str, np.ndarray]:
        """One slab's arrays `(Z, y, X)` as the writer takes them."""
        slabs = {"class_mask": cls, "instance_mask": inst}
        if "density" in self.dtypes:
            slabs["density"] = dens.detach().cpu().numpy() if hasattr(dens, "detach") else dens
        return slabs

    def store_slab(self, y0: int, slabs: dict[str, np.ndarray]) -> None:
        """Write one slab from row ``y0``; keep its labels binned for the tomogram's masks."""
        if self.writer is not None:
            self.writer.write(y0, {k: slabs[k] for k in self.dtypes})
        b = self.bin
        if b:
            usable = (slabs["class_mask"].shape[1] // b) * b
            if usable:
                for key in self.binned:
                    self.binned[key].append(bin_volume_labels(slabs[key][:, :usable], b))


def _write_particles(spec: SampleSpec, group: Any, layout: Any) -> dict[str, str]:
    """The particle table (columns and a STAR copy) into the sample; its checksums."""
    record = table_record(
        layout.particles,
        shape=tuple(layout.shape),
        pixel_spacing=float(layout.pixel_spacing),
        classes=layout.classes,
        tomo_name=f"sample_{spec.sample_id:06d}",
    )
    sums = wr.write_particles(group, record.columns, star=record.star, attrs=record.attrs)
    return {f"particles/{k}": v for k, v in sums.items()}


def _volume_checksums(writer: Any, ps: float, classes: dict[int, str]) -> dict[str, str]:
    """The volume's checksums (read back), then its OME pyramid and labels (new arrays)."""
    sums = {f"volume/{k}": v for k, v in writer.checksums().items()}
    write_grid_multiscale(writer.group, "volume", ps, classes)
    return sums


def _style(
    spec: SampleSpec,
    drew: SampleDraw,
    angles: np.ndarray,
    stacks: Mapping[str, Any],
    device: str,
) -> torch.Tensor:
    """FAKET `(T, H, W)`: CONTENT styled towards the drawn reference's tilts, from NOISY.

    With the calibrated noise model the detector comes last: the style step (FakET's,
    unchanged) runs on NOISY and CONTENT before the detector, then its output passes through
    the detector's MTF and takes the style tilts' mean and std again.
    """
    cfg = spec.config
    detector_last = _calibrated(spec, drew)
    ref_rec = spec.inputs.style_references[drew.style_reference]
    ref, ref_angles = _load_reference(ref_rec["path"])
    style_np, idx = _style_stack(ref, ref_angles, angles)
    model = get_style_model(str(spec.inputs.weights_spec), spec.inputs.weights_seed, device)
    key = f"{ref_rec.get('sha256', ref_rec['path'])}:{hashlib.sha1(idx.tobytes()).hexdigest()}"
    pre = "_pre" if detector_last else ""
    with deterministic_mode(cfg.style.deterministic, device):
        styled = style_transfer(
            stacks[f"content{pre}"],
            torch.from_numpy(np.array(style_np)),
            stacks[f"noisy{pre}"],
            model,
            StyleRun(
                precision=cfg.style.precision,
                batch_size=cfg.style.batch_size,  # 'auto': style.pick_batch_size's memory model
                cudnn_benchmark=False if cfg.style.deterministic else None,
            ),
            gram_cache=gram_cache(),
            style_key=key,
        )
    if not detector_last:
        return styled
    ref64 = np.asarray(style_np, dtype=np.float64)
    entry = spec.inputs.noise_models[drew.noise_model]
    calibration = _load_calibration(entry["path"])
    out = apply_detector(
        styled, calibration, angles, ref64.mean(axis=(1, 2)), ref64.std(axis=(1, 2))
    )
    if _intensity_match(cfg) == "quantiles":  # the style tilts' whole histogram, ranks kept
        out = match_quantiles(out, torch.from_numpy(ref64))
    return out


def _intensity_match(cfg: SimulationConfig) -> str:
    """How the calibrated model's FAKET takes the style tilts' intensities (default quantiles)."""
    return cfg.noise.intensity_match or "quantiles"


def _recon_source(modalities: Sequence[str]) -> str:
    for m in ("styled", "noisy", "content", "baseline"):
        if m in modalities:
            return m
    return "noiseless"


def _reconstruct(
    cfg: SimulationConfig,
    angles: np.ndarray,
    stacks: Mapping[str, Any],
    modalities: Sequence[str],
    device: str,
) -> dict[str, Any]:
    """The tomogram of the noisiest stored modality, with its source, bin and thickness."""
    rc = cfg.reconstruction
    source = _recon_source(modalities)
    b = int(rc.bin)
    thickness = int(rc.thickness or max(1, cfg.sample.thickness // b))
    tomo = reconstruct(
        stacks[source],
        angles,
        thickness,
        bin=b,
        filter=rc.filter,
        device=device,
        centring=Centring(unbinned_thickness=int(cfg.sample.thickness)),
    )
    return {
        "data": np.ascontiguousarray(tomo.detach().cpu().numpy(), dtype=np.float32),
        "source": source,
        "bin": b,
        "thickness": thickness,
    }


def _crop_z(mask: np.ndarray, thickness: int) -> np.ndarray:
    """The binned mask's Z range that the centred tomogram covers (zero-padded if thicker)."""
    zb = mask.shape[0]
    if thickness <= zb:
        z0 = (zb - thickness) // 2
        return mask[z0 : z0 + thickness]
    out = np.zeros((thickness, *mask.shape[1:]), dtype=mask.dtype)
    z0 = (thickness - zb) // 2
    out[z0 : z0 + zb] = mask
    return out


def _write_tomogram(spec: SampleSpec, group: Any, tomo: Mapping[str, Any], built: _Built) -> dict:
    """The tomogram and its Z-cropped binned masks into the sample; their checksums."""
    data = tomo["data"]
    arrays: dict[str, np.ndarray] = {"tomogram": data}
    for key, mask in built.binned_masks.items():
        m = _crop_z(mask, data.shape[0])
        if m.shape[1:] == data.shape[1:]:
            arrays[key] = m
    ps = float(spec.config.tilts.pixel_spacing) * tomo["bin"]
    sums = wr.write_grid(
        group,
        "tomogram",
        arrays,
        ps,
        attrs={
            "source": tomo["source"],
            "bin": tomo["bin"],
            "filter": spec.config.reconstruction.filter,
            "thickness": tomo["thickness"],
        },
    )
    classes = {int(k): v for k, v in group["particles"].attrs.get("classes", {}).items()}
    write_grid_multiscale(group["tomogram"], "tomogram", ps, classes)  # new arrays only
    return {f"tomogram/{k}": v for k, v in sums.items()}


def _tilts_writer(
    spec: SampleSpec,
    group: Any,
    drew: SampleDraw,
    modalities: Sequence[str],
    shape: tuple[int, int, int],
    angles: np.ndarray,
) -> Any:
    """The sample's ``tilts`` group with one array per modality, ready for whole stacks."""
    cfg = spec.config
    extra: dict[str, np.ndarray] = {}
    if drew.shifts_px is not None:
        sh = np.asarray(drew.shifts_px, dtype=np.float64)
        extra = {"shift_y_px": sh[:, 0], "shift_x_px": sh[:, 1]}
    attrs: dict[str, Any] = {
        "tilt_axis_deg": drew.tilt_axis_deg,
        "style_reference": drew.style_reference,
        "noise_model": drew.noise_model,
        "weights": spec.inputs.weights.get("name") if spec.inputs.weights else None,
    }
    if _calibrated(spec, drew):
        attrs["transfer"] = CALIBRATED_TRANSFER
        attrs["intensity_match"] = _intensity_match(cfg)
    out = cfg.output
    return wr.TiltsWriter(
        group,
        list(modalities),
        shape,
        angles,
        float(cfg.tilts.pixel_spacing),
        wr.TiltLayout(dtype=out.dtype, tilts_per_shard=out.tilts_per_shard, chunk=out.chunk),
        extra_coords=extra,
        attrs=attrs,
    )


def _save_stack(writer: Any, name: str, data: np.ndarray) -> dict[str, float]:
    """Write one ``(T, H, W)`` stack and return its statistics (runs on the writer thread)."""
    writer.write_all(name, data)
    return _stats(data)
