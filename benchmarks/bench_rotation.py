"""Benchmark: rotating particles on the host, SciPy against the kernel and torch, side by side.

Three implementations of one rotation (:mod:`faket_dask.stages.sample.rotation`): ``scipy``
(one ``affine_transform`` per particle, in threads: the host path up to builder 2's kernel),
``host`` (the numba kernel, in threads: the host path now) and ``batched`` (torch, many
orientations of a template at once, on ``--device``). All run on the same quaternions, in
alternation, ``--rounds`` times; the report gives wall and process CPU seconds per round and
the ratios to ``host``. SciPy's and the kernel's bytes are checked equal, torch's voxels.

    python benchmarks/bench_rotation.py [--n 512] [--rounds 3] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from faket_dask.stages.particles import quaternions_to_matrices, random_quaternions
from faket_dask.stages.sample import rotation
from faket_dask.stages.sample.rotation import VoxelBox, rotate_items
from faket_dask.stages.templates import Template, builtin_template

SHAPES = ("ribosome", "proteasome", "ring", "rod", "lshape", "sphere")  # the demo mix


def rotate_scipy(items: list[tuple[Template, np.ndarray]]) -> list[VoxelBox]:
    """The host path before the kernel: SciPy per particle, in threads, in the given order."""
    mats = quaternions_to_matrices(np.stack([q for _, q in items]))
    jobs = []
    for k, (tpl, _) in enumerate(items):
        m, lo, hi = rotation._boxes(tpl, mats[k : k + 1])
        jobs.append((tpl, m[0], lo[0], hi[0]))
    with ThreadPoolExecutor(rotation._threads()) as pool:
        return list(pool.map(lambda job: rotation._voxels(*job), jobs))


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
    paths = {
        "scipy": rotate_scipy,
        "host": lambda it: rotate_items(it),
        "batched": lambda it: rotate_items(it, args.device, batched=True),
    }
    for run in paths.values():  # warm up (template caches, compiled kernels)
        run(items[:12])
    wall: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        got = {}
        for name, run in paths.items():
            t0, c0 = time.perf_counter(), time.process_time()
            got[name] = run(items)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
        for a, b, c in zip(got["scipy"], got["host"], got["batched"], strict=True):
            assert a.zyx.tobytes() == b.zyx.tobytes() and a.values.tobytes() == b.values.tobytes()
            assert np.array_equal(b.zyx, c.zyx)
    result = {
        "n": args.n,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "sample_threads": rotation._threads(),
        "voxels": int(sum(b.count for b in got["host"])),
        **{f"{name}_s": [round(t, 3) for t in wall[name]] for name in paths},
        **{f"{name}_cpu_s": [round(t, 3) for t in cpu[name]] for name in paths},
        **{
            f"{name}_over_host_cpu": [
                round(a / b, 2) for a, b in zip(cpu[name], cpu["host"], strict=True)
            ]
            for name in ("scipy", "batched")
        },
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
