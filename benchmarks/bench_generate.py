"""Benchmark (not a test): samples through `generate` on the embedded local cluster.

Measures the runner's throughput (samples/s and /h) and its scheduling overhead per sample:
the wall time the workers' threads spent outside ``simulate_sample``, per sample::

    overhead = (wall x worker threads - sum of task times) / samples

By default many tiny samples (3 tilts of 16²). ``--shape/--angles/--thickness`` give real
sizes, e.g. the issue's whole-sample case on a GPU node::

    python benchmarks/bench_generate.py --n 16 --shape 1024 1024 --angles=-60:60:2 \
        --thickness 256 --occupancy 0.1 --style --threads-per-worker 2

``--threads-per-worker 2`` runs two samples per worker: one builds on the CPU while the other
uses the device (the device stages take turns). Compare with 1 to see the overlap's gain.

Usage::

    python benchmarks/bench_generate.py [--n 1000] [--workers 2] [--threads-per-worker 1]
        [--style] [--shape H W] [--angles A] [--thickness Z] [--occupancy F] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="samples")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes")
    parser.add_argument(
        "--threads-per-worker", type=int, default=1, help="samples at a time per worker"
    )
    parser.add_argument("--style", action="store_true", help="style with random weights")
    parser.add_argument("--shape", type=int, nargs=2, default=(16, 16), metavar=("H", "W"))
    parser.add_argument("--angles", default="-30:30:30", help="START:STOP:STEP (deg)")
    parser.add_argument("--thickness", type=int, default=8, help="volume Z (voxels)")
    parser.add_argument(
        "--occupancy", type=float, default=None, help="particle fraction (default: 1 particle)"
    )
    parser.add_argument("--pixel-spacing", type=float, default=None, help="Å (default: auto)")
    parser.add_argument("--out", type=Path, default=None, help="where the store goes (tmp)")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = parser.parse_args()

    from faket_dask_cli._progress import GenerateView
    from rich.console import Console

    from faket_dask.angles import parse_angles
    from faket_dask.config import config_from_dict
    from faket_dask.dist.cluster import connect
    from faket_dask.dist.runner import GenerateOptions, generate

    h, w = args.shape
    tiny = max(h, w) <= 64
    sample: dict = {"thickness": args.thickness}
    if args.occupancy is None:
        sample["particles"] = [{"name": "ball", "template": "builtin:sphere", "count": 1}]
    else:
        sample["occupancy"] = args.occupancy  # the built-in demo mix
    cfg = config_from_dict(
        {
            "seed": 0,
            "n_samples": args.n,
            "tilts": {
                "angles": args.angles,
                "shape": [h, w],
                "pixel_spacing": args.pixel_spacing or (20.0 if tiny else 10.0),
            },
            "sample": sample,
            "style": {"enabled": bool(args.style), "weights": "random"},
            "output": {
                "modalities": ["styled", "noisy"] if args.style else ["noisy", "noiseless"],
                "tilts_per_shard": 3 if tiny else 8,
                "chunk": 16 if tiny else 512,
            },
        }
    )
    tmp = Path(tempfile.mkdtemp(dir=args.out))
    store = tmp / "bench.zarr"
    try:
        t_connect = time.perf_counter()
        with connect(
            n_workers=args.workers, threads_per_worker=args.threads_per_worker, echo=print
        ) as client:
            threads = sum(client.nthreads().values())
            # warm the workers (imports, caches) so the timed run measures steady state
            generate(cfg, tmp / "warm.zarr", client, GenerateOptions(n_samples=2 * threads))
            t_ready = time.perf_counter()
            view = GenerateView(Console(stderr=True, highlight=False), progress=True)
            report = generate(cfg, store, client, GenerateOptions(on_event=view))
        wall = report.elapsed_s
        task = sum(float(s["timings"]["total"]) for s in report.summaries)
        n = report.n_done
        result = {
            "samples": n,
            "failed": report.n_failed,
            "workers": args.workers,
            "threads": threads,
            "shape": list(args.shape),
            "tilts": len(parse_angles(args.angles)),
            "thickness": args.thickness,
            "style": bool(args.style),
            "wall_s": round(wall, 3),
            "samples_per_s": round(n / wall, 2),
            "samples_per_h": round(3600 * n / wall),
            "stage_means_s": _stage_means(report.summaries),
            "mean_task_s": round(task / n, 4),
            "overhead_per_sample_ms": round(1000 * (wall * threads - task) / n, 2),
            "cluster_start_and_warmup_s": round(t_ready - t_connect, 2),
        }
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stage_means(summaries: list[dict]) -> dict[str, float]:
    keys = sorted({k for s in summaries for k in s["timings"]})
    return {
        k: round(sum(s["timings"].get(k, 0.0) for s in summaries) / len(summaries), 3) for k in keys
    }


if __name__ == "__main__":
    main()
