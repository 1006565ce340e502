"""Benchmark of one sample's stages: build, project, noise, style, reconstruct, write.

Times each stage of faket-dask's pipeline on one device (warm-up first, CUDA synchronised),
and reports tilts/s, samples/hour, the style transfer's achieved TFLOP/s and its fidelity
against the exact fp32 path, peak GPU memory (``torch.cuda.max_memory_allocated``) and peak
host RSS (``getrusage``). Prints a table and writes JSON with the device, torch version,
date and git commit. docs/performance.md explains the figures.

    python benchmarks/bench.py --suite tiny|cpu|gpu [--json OUT] [--device auto|cpu|cuda]
        [--precision fp32|tf32|bf16] [--sizes 61x1024x1024:256,...] [--weights random|imagenet|PATH]
    python benchmarks/bench.py --suite gpu --ablation [--json OUT]

Suites: ``tiny`` (seconds, a smoke test), ``cpu`` (9 x 256², a 64 x 256² volume), ``gpu``
(61 x 1024² from a 256 x 1024² volume, the projection of a 1024³ volume, and 61 x 3500²
styled under a 16 GiB memory cap; planned to finish in well under 8 minutes on an H100, with a
time budget that skips what would not fit). ``--ablation`` measures the style transfer's fast
paths one by one (precision, channels-last, cuDNN autotuning, batch size, folded
normalisation, Gram cache, tiling, torch.compile) at one size.

Sizes are ``TxHxW`` or ``TxHxW:Z`` (Z = volume thickness to build and project; without it the
noiseless tilts are synthetic and only noise, style and write run).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import functools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

GIB = 1024**3
ALL_STAGES = ("build", "project", "noise", "style", "reconstruct", "write")


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One benchmarked size: ``tilts`` x ``height`` x ``width``, from a ``thickness`` volume."""

    name: str
    tilts: int
    height: int
    width: int
    thickness: int = 0  # 0: synthetic noiseless tilts, no build/project
    stages: tuple[str, ...] = ALL_STAGES
    tile: int | str | None = None  # style tile core ('auto': from free memory)
    memory_limit_gib: float | None = None  # hard cap on the style stage's GPU memory
    host_stacks: bool = False  # keep the stacks in host memory during style
    fidelity_tilts: int = 4  # tilts re-run on the exact fp32 path to measure fidelity
    synthetic_volume: bool = False  # project a random volume instead of building a sample


SUITES: dict[str, list[Case]] = {
    "tiny": [Case("5x64x64", 5, 64, 64, 32, fidelity_tilts=2)],
    "cpu": [Case("9x256x256", 9, 256, 256, 64, fidelity_tilts=2)],
    "gpu": [
        Case("61x1024x1024", 61, 1024, 1024, 256, fidelity_tilts=8),
        Case("project-1024^3", 61, 1024, 1024, 1024, ("project",), synthetic_volume=True),
        Case(
            "61x3500x3500",
            61,
            3500,
            3500,
            0,
            ("noise", "style", "write"),
            tile="auto",
            memory_limit_gib=16.0,
            host_stacks=True,
            fidelity_tilts=2,
        ),
    ],
}
ABLATION_SIZES = {"tiny": (2, 64, 64), "cpu": (2, 128, 128), "gpu": (16, 1024, 1024)}
BUDGET_S = {"tiny": 120.0, "cpu": 900.0, "gpu": 420.0}  # stop starting stages after this
ABLATION_BUDGET_S = {"tiny": 120.0, "cpu": 1800.0, "gpu": 450.0}
COMPILE_NEEDS_S = 240.0  # a torch.compile variant starts only with this much budget left


def parse_sizes(text: str) -> list[Case]:
    """``61x1024x1024:256,9x256x256`` -> cases (all stages with a thickness, else no build)."""
    cases = []
    for part in text.split(","):
        dims, _, z = part.strip().partition(":")
        t, h, w = (int(v) for v in dims.lower().split("x"))
        thickness = int(z) if z else 0
        stages = ALL_STAGES if thickness else ("noise", "style", "write")
        cases.append(Case(part.strip(), t, h, w, thickness, stages))
    return cases


# --------------------------------------------------------------------------- measuring


class Clock:
    """Wall-clock stage timer that synchronises CUDA and records peak memory."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def stage(self, record: dict[str, Any]) -> Iterator[None]:
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        yield
        self.sync()
        record["s"] = round(time.perf_counter() - t0, 4)
        if self.cuda:
            record["gpu_peak_gib"] = round(torch.cuda.max_memory_allocated(self.device) / GIB, 3)
        record["rss_peak_gib"] = round(peak_rss_gib(), 3)


def run_style(
    content: torch.Tensor, style: torch.Tensor, init: torch.Tensor, model: Any, **opts: Any
) -> torch.Tensor:
    """``style_transfer`` with its options and keywords given as one flat set of keywords."""
    from dataclasses import fields

    from faket_dask.stages.style import StyleRun, style_transfer

    names = {f.name for f in fields(StyleRun)}
    options = StyleRun(**{k: v for k, v in opts.items() if k in names})
    rest = {k: v for k, v in opts.items() if k not in names}
    return style_transfer(content, style, init, model, options, **rest)


def timed(clock: Clock, fn: Callable[[], Any], repeats: int) -> tuple[Any, dict[str, Any]]:
    """Run ``fn`` ``repeats`` times; return the last result and the fastest run's record."""
    best: dict[str, Any] | None = None
    out = None
    times = []
    for _ in range(max(1, repeats)):
        out = None  # free the previous result first
        rec: dict[str, Any] = {}
        with clock.stage(rec):
            out = fn()
        times.append(rec["s"])
        if best is None or rec["s"] < best["s"]:
            best = rec
    assert best is not None
    if len(times) > 1:
        best["all_s"] = times
    return out, best


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def conv_macs_per_pixel(last_layer: int) -> float:
    """Multiply-adds per input pixel of VGG-19 ``features`` up to ``last_layer``.

    About 361k up to relu5_1 and 94k up to relu2_2 (spec §3).
    """
    from faket_dask.stages.style import layer_geometry
    from faket_dask.stages.style.vgg import CONV_INDICES

    geo = layer_geometry()
    macs, c_in = 0.0, 3
    for idx in CONV_INDICES:
        if idx > last_layer:
            break
        stride, _, channels = geo[idx]
        macs += 9 * c_in * channels / stride**2
        c_in = channels
    return macs


def style_flops_per_tilt(h: int, w: int, cached_grams: bool) -> float:
    """FLOPs of one tilt's style step: style forward (unless cached), content forward,
    image forward and backward (input gradients only: about one forward again)."""
    full = conv_macs_per_pixel(29)
    content = conv_macs_per_pixel(8)
    passes = (0.0 if cached_grams else full) + content + 2.0 * full
    return 2.0 * passes * h * w


# --------------------------------------------------------------------------- environment


def git_commit() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        if sha:
            return {"commit": sha, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"commit": os.environ.get("FAKET_DASK_COMMIT", "unknown"), "dirty": None}


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            device_name=props.name,
            device_memory_gib=round(props.total_memory / GIB, 1),
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        env["device_name"] = platform.processor() or platform.machine()
    return env


# --------------------------------------------------------------------------- inputs


def smooth_field(shape: tuple[int, int, int], seed: int, device: torch.device) -> torch.Tensor:
    """A (T, H, W) float32 field with some spatial correlation (cheap on any device)."""
    g = torch.Generator(device=device).manual_seed(seed)  # drawn where it is used: fast
    t, h, w = shape
    coarse = torch.randn((t, 1, max(2, h // 8), max(2, w // 8)), generator=g, device=device)
    field_ = torch.nn.functional.interpolate(
        coarse, size=(h, w), mode="bilinear", align_corners=False
    )[:, 0]
    return field_.add_(torch.randn((t, h, w), generator=g, device=device), alpha=0.5)


def sample_config(case: Case) -> Any:
    from faket_dask.config import config_from_dict

    big = case.height >= 128
    return config_from_dict(
        {
            "seed": 0,
            "tilts": {"shape": [case.height, case.width], "pixel_spacing": 10.0},
            "sample": {
                "thickness": case.thickness,
                "occupancy": 0.1,  # the built-in demo mix of six shapes
                "membranes": {"vesicles": 4 if big else 1, "planar": 1},
                "fiducials": {"count": 10 if big else 2},
                "solvent": 0.3,
            },
        }
    )


def load_model(weights: str, device: torch.device, compilable: bool = False) -> Any:
    """A private VGG-19 (not the per-process cache: the ablation modifies it).

    ``compilable``: the first convolution pads by concatenating edge rows and columns instead
    of ``F.pad(mode='replicate')`` (the same values): torch.compile (2.13) fails on
    ``replication_pad2d_backward``'s fake kernel ("expected size 3==3, stride 1==4096").
    """
    from faket_dask.stages.style.vgg import VGG19Features

    cls = _compilable_vgg() if compilable else VGG19Features
    if weights == "random":
        model = cls(seed=0)
    else:
        from faket_dask.stages.style.weights import load_vgg19

        _, info = load_vgg19(weights, device="cpu")
        model = cls(seed=None)
        model.load_state_dict(info.state_dict)
        model.weights_id = info.weights_id
    return model.to(device).eval().requires_grad_(False)


def _compilable_vgg() -> type:
    import torch.nn.functional as F

    from faket_dask.stages.style.vgg import VGG19Features

    class CompilableVGG19(VGG19Features):
        def _first_conv(self, x: torch.Tensor) -> torch.Tensor:
            conv = self.features[0]
            x = torch.cat([x[..., :1, :], x, x[..., -1:, :]], dim=-2)
            padded = torch.cat([x[..., :1], x, x[..., -1:]], dim=-1)
            mean = self.mean.view(1, 3, 1, 1)
            std = self.std.view(1, 3, 1, 1)
            return F.conv2d((padded - mean) / std, conv.weight, conv.bias)

    return CompilableVGG19


# --------------------------------------------------------------------------- one case


@dataclass
class CaseResult:
    case: Case
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        c = self.case
        return {
            "name": c.name,
            "tilts": c.tilts,
            "height": c.height,
            "width": c.width,
            "thickness": c.thickness,
            "tile": c.tile,
            "memory_limit_gib": c.memory_limit_gib,
            "stages": self.stages,
            **self.summary,
        }


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def run_case(
    case: Case,
    model: Any,
    device: torch.device,
    precision: str,
    deadline: Deadline,
    log: Callable[[str], None],
    repeats: int = 1,
) -> CaseResult:
    from faket_dask.stages.noise import fit_noise_model_from_reference
    from faket_dask.stages.noise_apply import NoiseDraw, apply_noise
    from faket_dask.stages.style import minmax

    clock = Clock(device)
    res = CaseResult(case)
    t, h, w = case.tilts, case.height, case.width
    angles = np.linspace(-60.0, 60.0, t)
    want = set(case.stages)

    def skip(name: str, why: str) -> None:
        res.stages[name] = {"skipped": why}
        log(f"  {name}: skipped ({why})")

    def fits(name: str, estimate_s: float = 0.0) -> bool:
        if deadline.left() > estimate_s:
            return True
        skip(name, "time budget")
        return False

    volume = noiseless = None
    # ---------------------------------------------------------------- build
    if "build" in want and fits("build"):
        from faket_dask.stages.sample import BuildSpec, build_layout, build_sample

        rec: dict[str, Any] = {}
        with clock.stage(rec), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec = BuildSpec.from_config(sample_config(case))
            t0 = time.perf_counter()
            layout = build_layout(spec)
            rec["layout_s"] = round(time.perf_counter() - t0, 4)
            sample = build_sample(layout)
            volume = torch.from_numpy(sample.density).to(device)
        rec["objects"] = len(layout.particles)
        rec["voxels"] = int(np.prod(sample.density.shape))
        del sample, layout
        res.stages["build"] = rec
        log(f"  build: {rec['s']:.3f} s ({rec['objects']} objects)")
    elif case.synthetic_volume or ("project" in want and case.thickness):
        g = torch.Generator(device=device).manual_seed(0)
        volume = torch.rand((case.thickness, h, w), generator=g, device=device)

    # ---------------------------------------------------------------- project
    if "project" in want and volume is not None and fits("project"):
        from faket_dask.stages.projection import Projector, project

        project(volume[:, :8], angles)  # warm-up (kernels, allocator)
        vol = volume
        noiseless, rec = timed(clock, lambda: project(vol, angles), repeats)
        # Steady state across samples: one operator for the geometry, kept in memory.
        proj = Projector((volume.shape[0], w), angles, w, volume.device, cache_bytes=64 * GIB)
        _, sub = timed(clock, lambda: proj(vol), 1)  # builds and keeps the operator
        rec["operator_build_s"] = sub["s"]
        again, sub = timed(clock, lambda: proj(vol), repeats)
        rec["cached_s"] = sub["s"]
        rec["max_abs_diff_cached"] = float((again - noiseless).abs().max())
        del again, proj, vol
        res.stages["project"] = rec
        log(f"  project: {rec['s']:.3f} s ({rec['cached_s']:.3f} s with a cached operator)")
    volume = None

    if not want & {"noise", "style", "reconstruct", "write"}:
        return res
    if noiseless is None:
        noiseless = smooth_field((t, h, w), 1, device)

    # ---------------------------------------------------------------- noise
    stacks: dict[str, torch.Tensor] = {}
    if fits("noise"):
        ref = smooth_field((t, 32, 32), 2, torch.device("cpu"))
        ref = ref * torch.linspace(1.0, 2.0, t).view(t, 1, 1) + 5.0
        noise_model = fit_noise_model_from_reference(ref, angles, snr=0.3, degree=min(2, t - 1))
        apply_noise(noiseless[:1], noise_model, angles[:1], seed=0)  # warm-up
        clean = noiseless
        both = NoiseDraw(modalities=("noisy", "content"))
        stacks, rec = timed(
            clock,
            lambda: apply_noise(clean, noise_model, angles, seed=0, options=both),
            repeats,
        )
        del clean
        res.stages["noise"] = rec
        log(f"  noise: {rec['s']:.3f} s")
    noiseless = None
    if not stacks:
        return res

    # ---------------------------------------------------------------- style
    styled = None
    style_ref = smooth_field((t, h, w), 3, device) * 2.0 + 10.0
    content, noisy = stacks["content"], stacks["noisy"]
    if case.host_stacks:
        pin = device.type == "cuda"  # pinned host memory: faster batch copies
        content, noisy, style_ref = (
            x.cpu().pin_memory() if pin else x.cpu() for x in (content, noisy, style_ref)
        )
    stacks.clear()
    ranges = {"content": minmax(content), "style": minmax(style_ref), "init": minmax(noisy)}
    limit = int(case.memory_limit_gib * GIB) if case.memory_limit_gib else None
    opts: dict[str, Any] = {
        "precision": precision,
        "batch_size": "auto",
        "ranges": ranges,
        "tile": case.tile,
        "memory_limit": limit,
    }
    if "style" in want and fits("style"):
        rec = {}
        try:
            styled = _style_stage(
                rec,
                content,
                style_ref,
                noisy,
                model,
                opts,
                device,
                precision,
                case,
                limit,
                clock,
                deadline,
                repeats,
                log,
            )
        except Exception as err:  # an OOM under the cap is a result: record it, go on
            rec["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
            log(f"  style: {rec['error']}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
        res.stages["style"] = rec
    if styled is None:
        styled = noisy  # later stages still run on something of the right shape
    content = noisy = style_ref = None

    # ---------------------------------------------------------------- reconstruct
    if "reconstruct" in want and case.thickness and fits("reconstruct"):
        from faket_dask.stages.reconstruction import reconstruct

        thickness = max(1, case.thickness // 2)
        src = styled.to(device)
        reconstruct(src[:, :32], angles, thickness, bin=2, filter="approxShrec")  # warm-up
        tomo, rec = timed(
            clock,
            lambda: reconstruct(src, angles, thickness, bin=2, filter="approxShrec"),
            repeats,
        )
        rec["shape"] = list(tomo.shape)
        del tomo, src
        res.stages["reconstruct"] = rec
        log(f"  reconstruct: {rec['s']:.3f} s")

    # ---------------------------------------------------------------- write
    if "write" in want and fits("write"):
        tmp = Path(tempfile.mkdtemp(prefix="faket-bench-"))
        counter = iter(range(1_000_000))
        try:
            nbytes, rec = timed(
                clock,
                lambda: write_zarr(tmp / f"bench{next(counter)}.zarr", styled, angles),
                repeats,
            )
            rec["stored_mib"] = round(nbytes / 1024**2, 1)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        res.stages["write"] = rec
        log(f"  write: {rec['s']:.3f} s ({rec['stored_mib']} MiB stored)")
    return res


def _style_stage(
    rec: dict[str, Any],
    content: torch.Tensor,
    style_ref: torch.Tensor,
    noisy: torch.Tensor,
    model: Any,
    opts: dict[str, Any],
    device: torch.device,
    precision: str,
    case: Case,
    limit: int | None,
    clock: Clock,
    deadline: Deadline,
    repeats: int,
    log: Callable[[str], None],
) -> torch.Tensor:
    """Time the style transfer (cold, then with cached Gram matrices) and its fidelity."""
    from faket_dask.stages.style import GramCache

    t, h, w = case.tilts, case.height, case.width
    run = functools.partial(run_style, content, style_ref, noisy, model, **opts)
    with memory_cap(device, limit):
        # Warm-up: cuDNN autotuning and allocator for the first batch's shapes.
        wt = min(t, _first_batch(h, w, precision, device, case.tile, limit, t))
        run_style(content[:wt], style_ref[:wt], noisy[:wt], model, **opts)
        styled, best = timed(clock, run, repeats)
        rec.update(best)
        rec["tilts_per_s"] = round(t / rec["s"], 2)
        flops = style_flops_per_tilt(h, w, cached_grams=False) * t
        rec["tflops_per_s"] = round(flops / rec["s"] / 1e12, 2)
        rec["batch_size"] = _first_batch(h, w, precision, device, case.tile, limit, t)
        rec["tile"] = _resolved_tile(h, w, precision, device, case.tile, limit)
        log(
            f"  style: {rec['s']:.3f} s, {rec['tilts_per_s']} tilts/s, "
            f"{rec['tflops_per_s']} TFLOP/s, batch {rec['batch_size']}, tile {rec['tile']}, "
            f"GPU peak {rec.get('gpu_peak_gib')} GiB"
        )
        # Steady state: samples that share a style reference reuse its Gram matrices.
        if deadline.left() > (1 + repeats) * rec["s"] + 10:
            cache = GramCache(max_bytes=64 * GIB)
            cached = functools.partial(run, gram_cache=cache, style_key="bench")
            cached()  # fills the cache
            _, sub = timed(clock, cached, repeats)
            rec["cached_grams_s"] = sub["s"]
            rec["cached_grams_tilts_per_s"] = round(t / sub["s"], 2)
            rec["cached_grams_gpu_peak_gib"] = sub.get("gpu_peak_gib")
            flops = style_flops_per_tilt(h, w, cached_grams=True) * t
            rec["cached_grams_tflops_per_s"] = round(flops / sub["s"] / 1e12, 2)
            log(f"  style (cached Gram matrices): {sub['s']:.3f} s")
            del cache
    # Fidelity: the exact fp32 path (no fast paths, no cap) on the first tilts.
    k = min(t, case.fidelity_tilts)
    if k and deadline.left() > rec["s"] * 4 * k / t + 5:
        try:
            exact = run_style(
                content[:k],
                style_ref[:k],
                noisy[:k],
                model,
                precision="fp32",
                batch_size=1,
                ranges=opts["ranges"],
                channels_last=False,
                cudnn_benchmark=False,
            )
            rec["fidelity"] = fidelity(styled[:k].to(exact.device), exact)
            rec["fidelity_tilts"] = k
            log(f"  style fidelity vs exact fp32: {rec['fidelity']}")
        except Exception as err:
            rec["fidelity"] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
    return styled


@contextlib.contextmanager
def memory_cap(device: torch.device, limit: int | None) -> Iterator[None]:
    """Make ``limit`` bytes a hard cap on this process's CUDA allocations while inside."""
    if device.type != "cuda" or limit is None:
        yield
        return
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.empty_cache()  # cached blocks from earlier stages would count against the cap
    torch.cuda.set_per_process_memory_fraction(min(1.0, limit / total), device)
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()


def _resolved_tile(
    h: int, w: int, precision: str, device: torch.device, tile: Any, limit: int | None
) -> int | None:
    from faket_dask.stages.style import free_device_bytes, pick_tile

    if tile != "auto":
        return tile
    free = free_device_bytes(device)
    if free is not None and limit is not None:
        free = min(free, limit)
    return pick_tile(h, w, precision, free)


def _first_batch(
    h: int, w: int, precision: str, device: torch.device, tile: Any, limit: int | None, t: int
) -> int:
    from faket_dask.stages.style import free_device_bytes, pick_batch_size

    free = free_device_bytes(device)
    if free is not None and limit is not None:
        free = min(free, limit)
    tile = _resolved_tile(h, w, precision, device, tile, limit)
    b = pick_batch_size(h, w, precision, free, device=device, tile=tile)
    n = max(1, -(-t // b))
    return max(1, -(-t // n))


def fidelity(fast: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
    """Mean and max |fast - exact|, and the 99th percentile, as fractions of exact's std."""
    diff = (fast.double() - exact.double()).abs()
    std = float(exact.double().std())
    flat = diff.flatten()
    sample = flat[:: max(1, flat.numel() // 4_000_000)]
    return {
        "mean_abs_diff_over_std": float(diff.mean()) / std,
        "p99_abs_diff_over_std": float(torch.quantile(sample, 0.99)) / std,
        "max_abs_diff_over_std": float(diff.max()) / std,
    }


def write_zarr(path: Path, styled: torch.Tensor, angles: np.ndarray) -> int:
    """Write the styled stack with the project's TiltsWriter (shards of 8 tilts)."""
    import zarr

    from faket_dask.io.writers import TiltLayout, TiltsWriter

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    layout = TiltLayout(tilts_per_shard=8, chunk=512)
    writer = TiltsWriter(group, ["styled"], tuple(styled.shape), angles, 10.0, layout)
    data = styled.detach().cpu().numpy()
    writer.write_all("styled", data)
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def summarise(res: CaseResult) -> dict[str, Any]:
    st = res.stages
    t = res.case.tilts
    out: dict[str, Any] = {}

    def secs(name: str, key: str = "s") -> float | None:
        v = st.get(name, {}).get(key)
        return float(v) if v is not None else None

    style_s = secs("style")
    if style_s:
        out["style_tilts_per_s"] = round(t / style_s, 2)
    # One sample: build -> project -> noise -> style -> write (reconstruction is optional).
    chain = [n for n in ("build", "project", "noise", "style", "write") if n in res.case.stages]
    cold_parts = [secs(n) for n in chain]
    steady_parts = [
        secs("project", "cached_s")
        if n == "project"
        else (secs("style", "cached_grams_s") or style_s)
        if n == "style"
        else secs(n)
        for n in chain
    ]
    whole = {"build", "style"} <= set(chain)
    if whole and all(p is not None for p in cold_parts + steady_parts):
        cold = sum(p for p in cold_parts if p is not None)
        hot = sum(p for p in steady_parts if p is not None)
        out["sample_s"] = round(cold, 3)
        out["sample_steady_s"] = round(hot, 3)
        out["samples_per_hour"] = round(3600.0 / cold, 1)
        out["samples_per_hour_steady"] = round(3600.0 / hot, 1)
    peaks = [v.get("gpu_peak_gib") for v in st.values() if isinstance(v, dict)]
    if any(p is not None for p in peaks):
        out["gpu_peak_gib"] = max(p for p in peaks if p is not None)
    out["rss_peak_gib"] = round(peak_rss_gib(), 3)
    return out


# --------------------------------------------------------------------------- ablation


@dataclass(frozen=True)
class Variant:
    name: str
    precision: str = "fp32"
    batch_size: int | str = "auto"
    channels_last: bool = False
    cudnn_benchmark: bool = False
    fold: bool = False
    cached_grams: bool = False
    tile: int | None = None
    compile: bool = False
    cuda_only: bool = False
    stored_pool_indices: bool = False  # torch's MaxPool2d instead of the recomputing pools


def _raise_recompile_limit(limit: int = 64) -> None:
    """One graph per (grad mode, layers, batch shape): more than dynamo's default 8."""
    import torch._dynamo

    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(limit, getattr(cfg, name)))


def ablation_variants(batch_sizes: list[int], tile: int) -> list[Variant]:
    fast = {"channels_last": True, "cudnn_benchmark": True}
    v = [
        Variant("fp32, batch 1 (reference-like)", batch_size=1),
        Variant("fp32, batch auto"),
        Variant("tf32", precision="tf32", cuda_only=True),
        Variant("tf32 + channels_last", precision="tf32", channels_last=True),
        Variant("tf32 + cudnn.benchmark", precision="tf32", cudnn_benchmark=True, cuda_only=True),
        Variant("tf32 + channels_last + benchmark", precision="tf32", **fast),
        Variant("bf16", precision="bf16"),
        Variant("bf16 + channels_last + benchmark", precision="bf16", **fast),
        Variant("tf32 fast + fold_normalization", precision="tf32", fold=True, **fast),
        Variant("tf32 fast + cached Gram matrices", precision="tf32", cached_grams=True, **fast),
        Variant("bf16 fast + cached Gram matrices", precision="bf16", cached_grams=True, **fast),
        Variant(f"tf32 fast + tiles of {tile}", precision="tf32", tile=tile, **fast),
        Variant(
            "tf32 fast + stored pool indices", precision="tf32", stored_pool_indices=True, **fast
        ),
    ]
    v += [
        Variant(f"tf32 fast, batch {b}", precision="tf32", batch_size=b, **fast)
        for b in batch_sizes
    ]
    # Last: compiling takes minutes; the most promising first.
    v.append(Variant("tf32 fast + torch.compile", precision="tf32", compile=True, **fast))
    v.append(Variant("bf16 fast + torch.compile", precision="bf16", compile=True, **fast))
    v.append(
        Variant(
            "tf32 + benchmark + torch.compile", precision="tf32", compile=True, cudnn_benchmark=True
        )
    )
    return v


def run_ablation(
    size: tuple[int, int, int],
    weights: str,
    device: torch.device,
    deadline: Deadline,
    try_compile: bool,
    log: Callable[[str], None],
    repeats: int = 1,
) -> list[dict[str, Any]]:
    from faket_dask.stages.style import GramCache, minmax

    t, h, w = size
    clock = Clock(device)
    base = smooth_field((t, h, w), 1, device)
    content = base + 0.25 * smooth_field((t, h, w), 4, device)
    noisy = base + smooth_field((t, h, w), 5, device)
    style_ref = smooth_field((t, h, w), 3, device) * 2.0 + 10.0
    ranges = {"content": minmax(content), "style": minmax(style_ref), "init": minmax(noisy)}
    model = load_model(weights, device)
    batch_sizes = [b for b in (1, 2, 4, 8, 16, 32) if b <= t]
    tile = max(16, (max(h, w) // 2 + 15) // 16 * 16)
    rows: list[dict[str, Any]] = []
    reference = None
    for v in ablation_variants(batch_sizes, tile):
        row: dict[str, Any] = {"variant": v.name}
        rows.append(row)
        if v.cuda_only and device.type != "cuda":
            row["skipped"] = "CUDA only"
            continue
        if v.compile and not try_compile:
            row["skipped"] = "torch.compile not tried (--compile to try)"
            continue
        if deadline.left() < (COMPILE_NEEDS_S if v.compile else 15):
            row["skipped"] = "time budget"
            continue
        m = model
        if v.fold:
            m = load_model(weights, device)
            m.fold_normalization = True
        if v.stored_pool_indices:  # the default pools recompute their argmax (vgg.MaxPool2x2)
            m = load_model(weights, device)
            for i, layer in enumerate(m.features):
                if isinstance(layer, torch.nn.MaxPool2d):
                    m.features[i] = torch.nn.MaxPool2d(2, 2)
        if v.compile:
            _raise_recompile_limit()
            m = torch.compile(load_model(weights, device, compilable=True), dynamic=False)
        cache = GramCache(max_bytes=16 * GIB) if v.cached_grams else None
        opts = {
            "precision": v.precision,
            "batch_size": v.batch_size,
            "ranges": ranges,
            "channels_last": v.channels_last,
            "cudnn_benchmark": v.cudnn_benchmark,
            "tile": v.tile,
            "gram_cache": cache,
            "style_key": "ablation" if cache is not None else None,
        }
        try:
            t0 = time.perf_counter()
            run_style(content, style_ref, noisy, m, **opts)  # warm-up (and compile)
            clock.sync()
            warm = time.perf_counter() - t0
            run = functools.partial(run_style, content, style_ref, noisy, m, **opts)
            out, rec = timed(clock, run, repeats)
        except Exception as err:  # a variant that fails is a result, not a crash
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            log(f"  {v.name}: {row['error']}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        row["s"] = rec["s"]
        row["tilts_per_s"] = round(t / rec["s"], 2)
        row["tflops_per_s"] = round(
            style_flops_per_tilt(h, w, v.cached_grams) * t / rec["s"] / 1e12, 3
        )
        row["gpu_peak_gib"] = rec.get("gpu_peak_gib")
        row["warmup_s"] = round(warm, 2)
        if reference is None:
            reference = out  # the first variant: exact fp32, one tilt at a time
        row["fidelity"] = fidelity(out, reference)
        log(
            f"  {v.name}: {row['tilts_per_s']} tilts/s, {row['tflops_per_s']} TFLOP/s, "
            f"{row['gpu_peak_gib']} GiB, mean |diff| "
            f"{row['fidelity']['mean_abs_diff_over_std']:.2e} std"
        )
        del out, m
    return rows


# --------------------------------------------------------------------------- profile


def profile_style(
    size: tuple[int, int, int],
    weights: str,
    device: torch.device,
    precision: str,
    log: Callable[[str], None],
    rows: int = 15,
) -> dict[str, Any]:
    """torch.profiler over one style transfer (after a warm-up): the top kernels by time."""
    from torch.profiler import ProfilerActivity, profile

    from faket_dask.stages.style import minmax

    t, h, w = size
    base = smooth_field((t, h, w), 1, device)
    content = base + 0.25 * smooth_field((t, h, w), 4, device)
    noisy = base + smooth_field((t, h, w), 5, device)
    style_ref = smooth_field((t, h, w), 3, device) * 2.0 + 10.0
    ranges = {"content": minmax(content), "style": minmax(style_ref), "init": minmax(noisy)}
    model = load_model(weights, device)
    opts = {"precision": precision, "batch_size": "auto", "ranges": ranges}
    run_style(content, style_ref, noisy, model, **opts)  # warm-up
    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    clock = Clock(device)
    clock.sync()
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        run_style(content, style_ref, noisy, model, **opts)
        clock.sync()
    wall = time.perf_counter() - t0
    # Self time: on CUDA the kernels themselves come first, not the ops that launch them.
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)
    total = sum(float(getattr(e, key, 0.0)) for e in events)
    top = []
    for e in events[:rows]:
        us = float(getattr(e, key, 0.0))
        top.append({"name": e.key[:120], "calls": e.count, "ms": round(us / 1000, 3)})
    flops = style_flops_per_tilt(h, w, cached_grams=False) * t
    log(prof.key_averages().table(sort_by=key, row_limit=rows))
    return {
        "size": list(size),
        "precision": precision,
        "wall_s_under_profiler": round(wall, 3),
        "tflops_per_s_under_profiler": round(flops / wall / 1e12, 2),
        "self_time_total_ms": round(total / 1000, 3),
        "top": top,
    }


# --------------------------------------------------------------------------- targets


def gpu_targets(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets beside what this run measured (None where not measured)."""
    by = {c["name"]: c for c in cases}
    c1 = by.get("61x1024x1024", {})
    c2 = by.get("61x3500x3500", {})
    cp = by.get("project-1024^3", {})
    s1 = c1.get("stages", {}).get("style", {})
    s2 = c2.get("stages", {}).get("style", {})
    pr = cp.get("stages", {}).get("project", {})
    fid = s1.get("fidelity", {}).get("mean_abs_diff_over_std")

    def row(what: str, target: str, value: Any, met: bool | None) -> dict[str, Any]:
        return {"what": what, "target": target, "measured": value, "met": met}

    tps = s1.get("tilts_per_s")
    s2s, s2m = s2.get("s"), s2.get("gpu_peak_gib")
    pcs = pr.get("cached_s")
    ss = c1.get("sample_steady_s")
    return [
        row("style 61x1024², tilts/s", ">= 150", tps, None if tps is None else tps >= 150),
        row(
            "style 61x3500², s / peak GiB",
            "<= 8 s, <= 16 GiB",
            None if s2s is None else [s2s, s2m],
            None if s2s is None else (s2s <= 8 and (s2m or 0) <= 16),
        ),
        row(
            "project 1024³ -> 61 tilts, s (cached operator)",
            "<= 0.25",
            pcs,
            None if pcs is None else pcs <= 0.25,
        ),
        row(
            "whole sample 256x1024² -> Zarr, s (steady)",
            "<= 1",
            ss,
            None if ss is None else ss <= 1,
        ),
        row(
            "fidelity vs fp32, mean |diff| / std",
            "<= 0.015",
            fid,
            None if fid is None else fid <= 0.015,
        ),
    ]


# --------------------------------------------------------------------------- output


def print_table(cases: list[dict[str, Any]], out: Callable[[str], None]) -> None:
    cols = ["build", "project", "noise", "style", "reconstruct", "write"]
    head = f"{'case':<16}" + "".join(f"{c:>12}" for c in cols)
    head += f"{'tilts/s':>10}{'sample s':>10}{'samples/h':>11}{'GPU GiB':>9}{'RSS GiB':>9}"
    out(head)
    for c in cases:
        line = f"{c['name']:<16}"
        for col in cols:
            v = c["stages"].get(col, {})
            cell = f"{v['s']:.3f}" if "s" in v else "-"
            line += f"{cell:>12}"
        line += f"{c.get('style_tilts_per_s', '-')!s:>10}{c.get('sample_s', '-')!s:>10}"
        line += f"{c.get('samples_per_hour', '-')!s:>11}{c.get('gpu_peak_gib', '-')!s:>9}"
        line += f"{c.get('rss_peak_gib', '-')!s:>9}"
        out(line)


def print_ablation(rows: list[dict[str, Any]], out: Callable[[str], None]) -> None:
    out(f"{'variant':<40}{'tilts/s':>10}{'TFLOP/s':>10}{'GPU GiB':>9}{'mean|d|/std':>13}")
    for r in rows:
        if "tilts_per_s" not in r:
            out(f"{r['variant']:<40}  {r.get('skipped') or r.get('error')}")
            continue
        fid = r["fidelity"]["mean_abs_diff_over_std"]
        out(
            f"{r['variant']:<40}{r['tilts_per_s']:>10}{r['tflops_per_s']:>10}"
            f"{r['gpu_peak_gib']!s:>9}{fid:>13.2e}"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=sorted(SUITES), default="tiny")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument(
        "--precision",
        choices=("fp32", "tf32", "bf16"),
        default=None,
        help="style precision (default: tf32 on CUDA, fp32 on the CPU)",
    )
    ap.add_argument("--sizes", default=None, help="override the suite: TxHxW[:Z],...")
    ap.add_argument("--weights", default="random", help="random, imagenet or a state-dict path")
    ap.add_argument("--ablation", action="store_true", help="measure the style fast paths")
    ap.add_argument("--ablation-size", default=None, help="TxHxW for --ablation")
    ap.add_argument(
        "--profile", action="store_true", help="also profile one style transfer (top kernels)"
    )
    ap.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="try torch.compile in the ablation (default: on CUDA only)",
    )
    ap.add_argument("--budget-s", type=float, default=None, help="time budget (seconds)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per stage, fastest kept")
    args = ap.parse_args(argv)

    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # "cuda" != "cuda:0"
    precision = args.precision or ("tf32" if device.type == "cuda" else "fp32")
    budgets = ABLATION_BUDGET_S if args.ablation else BUDGET_S
    budget = args.budget_s if args.budget_s is not None else budgets[args.suite]
    repeats = args.repeats or (
        {"tiny": 1, "cpu": 2, "gpu": 3}[args.suite]
        if args.ablation
        else {"tiny": 1, "cpu": 2, "gpu": 1}[args.suite]
    )
    deadline = Deadline(budget)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(msg, flush=True)

    result: dict[str, Any] = {
        "suite": args.suite,
        "mode": "ablation" if args.ablation else "stages",
        "environment": environment(device),
        "options": {
            "precision": precision,
            "weights": args.weights,
            "budget_s": budget,
            "repeats": repeats,
        },
    }
    log(
        f"faket-dask bench: suite {args.suite} on {result['environment']['device_name']} "
        f"({device}), torch {torch.__version__}, precision {precision}"
    )
    if args.ablation:
        if args.ablation_size:
            size = tuple(int(v) for v in args.ablation_size.lower().split("x"))
        else:
            size = ABLATION_SIZES[args.suite]
        try_compile = device.type == "cuda" if args.compile is None else args.compile
        result["ablation_size"] = list(size)
        rows = run_ablation(size, args.weights, device, deadline, try_compile, log, repeats)  # type: ignore[arg-type]
        result["ablation"] = rows
        log("")
        print_ablation(rows, log)
    else:
        cases = parse_sizes(args.sizes) if args.sizes else SUITES[args.suite]
        model = load_model(args.weights, device)
        out_cases = []
        for case in cases:
            log(f"case {case.name}")
            if deadline.left() <= 0:
                out_cases.append({"name": case.name, "skipped": "time budget", "stages": {}})
                continue
            try:
                res = run_case(case, model, device, precision, deadline, log, repeats)
                res.summary = summarise(res)
                out_cases.append(res.to_json())
            except Exception as err:
                traceback.print_exc()
                out_cases.append(
                    {"name": case.name, "error": f"{type(err).__name__}: {err}", "stages": {}}
                )
            if device.type == "cuda":
                torch.cuda.empty_cache()
        result["cases"] = out_cases
        if args.suite == "gpu" and not args.sizes:
            result["targets"] = gpu_targets(out_cases)
        log("")
        print_table([c for c in out_cases if "error" not in c], log)
        for row in result.get("targets", []):
            log(f"target {row['what']}: {row['target']} -> {row['measured']} (met: {row['met']})")
    if args.profile:
        size = ABLATION_SIZES[args.suite]
        if args.ablation_size:
            size = tuple(int(v) for v in args.ablation_size.lower().split("x"))
        if deadline.left() > 30:
            try:
                result["profile"] = profile_style(size, args.weights, device, precision, log)  # type: ignore[arg-type]
            except Exception as err:
                result["profile"] = {"error": f"{type(err).__name__}: {err}"}
        else:
            result["profile"] = {"skipped": "time budget"}
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    result["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    result["rss_peak_gib"] = round(peak_rss_gib(), 3)
    log(f"wall {result['wall_s']} s, peak RSS {result['rss_peak_gib']} GiB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
        log(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
