"""Benchmark (not a test): many tiny samples through `generate` on the embedded local cluster.

Measures the runner's throughput and its scheduling overhead per sample: the wall time the
workers' threads spent outside ``simulate_sample``, per sample::

    overhead = (wall x worker threads - sum of task times) / samples

Usage::

    python benchmarks/bench_generate.py [--n 1000] [--workers 2] [--style] [--out DIR]
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
    parser.add_argument("--style", action="store_true", help="style with random weights")
    parser.add_argument("--out", type=Path, default=None, help="where the store goes (tmp)")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = parser.parse_args()

    from faket_dask.cluster import connect
    from faket_dask.config import config_from_dict
    from faket_dask.runner import generate

    cfg = config_from_dict(
        {
            "seed": 0,
            "n_samples": args.n,
            "tilts": {"angles": "-30:30:30", "shape": [16, 16], "pixel_spacing": 20.0},
            "sample": {
                "thickness": 8,
                "particles": [{"name": "ball", "template": "builtin:sphere", "count": 1}],
            },
            "style": {"enabled": bool(args.style), "weights": "random"},
            "output": {
                "modalities": ["styled", "noisy"] if args.style else ["noisy", "noiseless"],
                "tilts_per_shard": 3,
                "chunk": 16,
            },
        }
    )
    tmp = Path(tempfile.mkdtemp(dir=args.out))
    store = tmp / "bench.zarr"
    try:
        t_connect = time.perf_counter()
        with connect(n_workers=args.workers, echo=print) as client:
            threads = sum(client.nthreads().values())
            # warm the workers (imports, caches) so the timed run measures steady state
            generate(cfg, tmp / "warm.zarr", n_samples=2 * threads, client=client, progress=False)
            t_ready = time.perf_counter()
            report = generate(cfg, store, client=client, progress=True)
        wall = report.elapsed_s
        task = sum(float(s["timings"]["total"]) for s in report.summaries)
        n = report.n_done
        result = {
            "samples": n,
            "failed": report.n_failed,
            "workers": args.workers,
            "threads": threads,
            "style": bool(args.style),
            "wall_s": round(wall, 3),
            "samples_per_s": round(n / wall, 2),
            "mean_task_s": round(task / n, 4),
            "overhead_per_sample_ms": round(1000 * (wall * threads - task) / n, 2),
            "cluster_start_and_warmup_s": round(t_ready - t_connect, 2),
        }
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
