"""Benchmark: build a (300, 2048, 2048) labeled sample slab by slab and project it to 9 tilts.

Runs on CPU and reports wall time per phase, the process CPU time of layout and render
(``*_cpu_s``: every thread, less sensitive to a shared machine's load) and the peak host RSS
(``ru_maxrss``); the volume is never whole in memory: each Y slab is rendered, projected and
dropped. It uses only the builder's public calls, so it also runs an older tree's builder
(``PYTHONPATH=OLD_TREE python benchmarks/bench_sample.py ...``).

    python benchmarks/bench_sample.py [--shape Z Y X] [--tilts 9] [--slab 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings

import numpy as np
import torch

from faket_dask.config import config_from_dict
from faket_dask.stages.projection import Projector
from faket_dask.stages.sample import BuildSpec, build_layout, render_slab


def peak_rss_gib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024**2


def _render_and_project(layout, projector, tilts: torch.Tensor, rows: int) -> dict:
    """Render every ``rows``-row slab, project it into ``tilts``; seconds and labeled voxels."""
    ny = layout.shape[1]
    out = {"render_s": 0.0, "render_cpu_s": 0.0, "project_s": 0.0, "labeled": 0}
    for y0 in range(0, ny, rows):
        y1 = min(ny, y0 + rows)
        t1 = time.perf_counter()
        c1 = time.process_time()
        density, class_mask, instance_mask = render_slab(layout, y0, y1, device="cpu")
        t2 = time.perf_counter()
        out["render_cpu_s"] += time.process_time() - c1
        projector(density, out=tilts[:, y0:y1])
        out["project_s"] += time.perf_counter() - t2
        out["render_s"] += t2 - t1
        out["labeled"] += int(np.count_nonzero(instance_mask))
        del density, class_mask, instance_mask
    return out


def _config(args: argparse.Namespace, shape: tuple[int, int, int], objects: bool = True):
    """The benchmark's sample config for a ``(Z, Y, X)`` volume (membranes, beads: ``objects``)."""
    nz, ny, nx = shape
    return config_from_dict(
        {
            "seed": args.seed,
            "tilts": {"shape": [ny, nx], "pixel_spacing": args.pixel_spacing},
            "sample": {
                "thickness": nz,
                "occupancy": args.occupancy,  # the built-in demo mix of six shapes
                "membranes": {"vesicles": 4 if objects else 0, "planar": 1 if objects else 0},
                "fiducials": {"count": 10 if objects else 0},
                "solvent": 0.3,
                "orientation_grid": args.orientation_grid,
            },
        }
    )


def _warm_up(args: argparse.Namespace) -> None:
    """Build and render a 32 x 64 x 64 sample of the same mix (kernels, template caches).

    The figures are then a sample's cost in a process that has built one before, as a Dask
    worker sees it from its second sample on (``--cold`` keeps the one-time costs in).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layout = build_layout(BuildSpec.from_config(_config(args, (32, 64, 64), False)))
        render_slab(layout, 0, 64, device="cpu")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--shape", type=int, nargs=3, default=(300, 2048, 2048), metavar=("Z", "Y", "X")
    )
    ap.add_argument("--tilts", type=int, default=9)
    ap.add_argument("--slab", type=int, default=64, help="Y rows per slab")
    ap.add_argument("--pixel-spacing", type=float, default=10.0)
    ap.add_argument("--occupancy", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--orientation-grid",
        type=int,
        default=None,
        help="sample.orientation_grid: rotations per class (default: one per particle)",
    )
    ap.add_argument(
        "--cold",
        action="store_true",
        help="no warm-up: include the process's one-time costs (compiled kernels loaded)",
    )
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    nz, ny, nx = args.shape
    cfg = _config(args, (nz, ny, nx))
    angles = np.linspace(-60.0, 60.0, args.tilts)
    spec = BuildSpec.from_config(cfg)
    if not args.cold:
        _warm_up(args)
    t0 = time.perf_counter()
    c0 = time.process_time()  # CPU seconds of every thread: less sensitive to a loaded machine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layout = build_layout(spec)
    t_layout = time.perf_counter() - t0
    c_layout = time.process_time() - c0
    print(
        f"layout: {t_layout:.1f} s, {len(layout.particles)} objects, occupancy "
        f"{layout.info['particle_occupancy']:.3f}, peak RSS {peak_rss_gib():.2f} GiB",
        flush=True,
    )
    projector = Projector((nz, nx), angles, nx, "cpu")
    tilts = torch.empty((len(angles), ny, nx), dtype=torch.float32)
    slabs = _render_and_project(layout, projector, tilts, args.slab)
    total = time.perf_counter() - t0
    result = {
        "shape": [nz, ny, nx],
        "tilts": len(angles),
        "slab_rows": args.slab,
        "objects": len(layout.particles),
        "particle_occupancy": layout.info["particle_occupancy"],
        "labeled_fraction": slabs["labeled"] / (nz * ny * nx),
        "layout_s": round(t_layout, 1),
        "render_s": round(slabs["render_s"], 1),
        "project_s": round(slabs["project_s"], 1),
        "wall_s": round(total, 1),
        "layout_cpu_s": round(c_layout, 1),
        "render_cpu_s": round(slabs["render_cpu_s"], 1),
        "peak_rss_gib": round(peak_rss_gib(), 3),
        "torch_threads": torch.get_num_threads(),
        "orientation_grid": args.orientation_grid,
        "builder": layout.info.get("builder"),
        "warm_up": not args.cold,
        "tilt_checksum_mean": float(tilts.mean()),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if result["peak_rss_gib"] >= 4.0:
        print("peak RSS is over the 4 GiB budget", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
