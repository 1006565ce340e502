"""Benchmark: rotating particles on the host, SciPy in threads against torch batched, side by side.

The builder's two implementations of one rotation (:mod:`faket_dask.stages.sample.rotation`):
``host`` (one SciPy ``affine_transform`` per particle, in threads) and ``batched`` (torch, many
orientations of a template at once, on ``--device``). Both run on the same quaternions, in
alternation, ``--rounds`` times; the report gives seconds per round and the ratio. The voxels
are checked equal.

    python benchmarks/bench_rotation.py [--n 512] [--rounds 3] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from faket_dask.stages.particles import random_quaternions
from faket_dask.stages.sample.rotation import rotate_items
from faket_dask.stages.templates import builtin_template

SHAPES = ("ribosome", "proteasome", "ring", "rod", "lshape", "sphere")  # the demo mix


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=512, help="particles per round (classes cycled)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pixel-spacing", type=float, default=10.0)
    ap.add_argument("--device", default="cpu", help="torch device of the batched path")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    tpls = [builtin_template(s, args.pixel_spacing) for s in SHAPES]
    qs = random_quaternions(np.random.default_rng(0), args.n)
    items = [(tpls[i % len(tpls)], q) for i, q in enumerate(qs)]
    rotate_items(items[:12])  # warm up both paths (template caches, kernels)
    rotate_items(items[:12], args.device, batched=True)
    times: dict[str, list[float]] = {"host": [], "batched": []}
    for _ in range(args.rounds):
        for name in times:
            t0 = time.perf_counter()
            got = rotate_items(items, args.device, batched=name == "batched")
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
            if name == "host":
                host = got
            else:
                assert all(np.array_equal(a.zyx, b.zyx) for a, b in zip(host, got, strict=True))
    result = {
        "n": args.n,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "voxels": int(sum(b.count for b in host)),
        "host_s": [round(t, 3) for t in times["host"]],
        "batched_s": [round(t, 3) for t in times["batched"]],
        "batched_over_host": [
            round(b / h, 2) for b, h in zip(times["batched"], times["host"], strict=True)
        ],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
