"""Benchmark: the CPU time of a layout's placement (everything of ``build_layout`` but rotation).

Builds the layout of ``bench_sample.py``'s sample (the demo mix of six shapes, 4 vesicles, a
planar membrane, 10 beads) ``--runs`` times in one process and reports the process CPU time
(every thread) of each build, of its rotations (``rotate_items``, timed around each call) and
their difference, ``placement_cpu_s``: occupancy grid, membranes, beads, footprints, candidate
tests, marks. The first build rotates for real; later builds take the same rotations from a
cache (fresh ``VoxelBox`` objects, so no property computed in an earlier build is reused;
with the bounds the rotation gave them, where a tree's rotation gives any), which leaves
placement as the only work. The SHA-256 of the particle table shows that two
trees placed the same particles.

With ``--old TREE [TREE ...]`` (git worktrees of older commits) it runs those trees and this
one in turn, ``--repeats`` times each, in fresh processes on the same machine, and prints all
(keyed by the tree as given, and ``new``).

    python benchmarks/bench_placement.py [--shape Z Y X] [--occupancy F] [--runs 3]
        [--old TREE ... --repeats 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from faket_dask.config import config_from_dict
from faket_dask.stages.sample import BuildSpec, build_layout
from faket_dask.stages.sample import layout as layout_module
from faket_dask.stages.sample.rotation import VoxelBox


def _fresh(zyx: np.ndarray, values: np.ndarray, offset: np.ndarray | None, shape: tuple | None):
    """A new box as the rotation made it (with the bounds it carried, on trees that have them)."""
    if offset is None or not hasattr(VoxelBox, "bounded"):
        return VoxelBox(zyx, values)
    return VoxelBox.bounded(zyx, values, offset, offset + np.array(shape) - 1)


class _Rotations:
    """``rotate_items`` with a cache of its results and the CPU seconds spent in it."""

    def __init__(self) -> None:
        self.real = layout_module.rotate_items
        self.cache: dict[bytes, tuple] = {}
        self.cpu = 0.0

    def __call__(self, items, device=None):  # the layout's rotate_items
        c0 = time.process_time()
        keys = [t.name.encode() + q.tobytes() for t, q in items]
        if all(k in self.cache for k in keys):
            out = [_fresh(*self.cache[k]) for k in keys]
        else:
            out = self.real(items, device)
            for k, box in zip(keys, out, strict=True):
                known = box.__dict__  # bounds the rotation set (not computed here)
                self.cache[k] = (box.zyx, box.values, known.get("offset"), known.get("shape"))
        self.cpu += time.process_time() - c0
        return out


def _child(args: argparse.Namespace) -> list[dict]:
    nz, ny, nx = args.shape
    cfg = config_from_dict(
        {
            "seed": args.seed,
            "tilts": {"shape": [ny, nx], "pixel_spacing": 10.0},
            "sample": {
                "thickness": nz,
                "occupancy": args.occupancy,
                "membranes": {"vesicles": 4, "planar": 1},
                "fiducials": {"count": 10},
                "solvent": 0.3,
            },
        }
    )
    spec = BuildSpec.from_config(cfg)
    rot = _Rotations()
    layout_module.rotate_items = rot
    out = []
    for run in range(args.runs):
        rot.cpu = 0.0
        c0, t0 = time.process_time(), time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layout = build_layout(spec)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        table = layout.particles.to_csv().encode()
        out.append(
            {
                "run": run,
                "objects": len(layout.particles),
                "layout_cpu_s": round(cpu, 3),
                "rotation_cpu_s": round(rot.cpu, 3),
                "placement_cpu_s": round(cpu - rot.cpu, 3),
                "layout_wall_s": round(wall, 3),
                "table_sha256": hashlib.sha256(table).hexdigest()[:16],
            }
        )
        print(json.dumps(out[-1]), file=sys.stderr, flush=True)
        del layout
    return out


def _spawn(tree: Path, argv: list[str]) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *argv]
    res = subprocess.run(cmd, env=env, cwd=tree, check=True, capture_output=True, text=True)
    return json.loads(res.stdout)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", type=int, nargs=3, default=(256, 1024, 1024))
    ap.add_argument("--occupancy", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=3, help="builds per process")
    ap.add_argument(
        "--old", type=Path, nargs="+", default=None, help="older trees to run in turn with this one"
    )
    ap.add_argument("--repeats", type=int, default=2, help="processes per tree (with --old)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None)
    raw = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(raw)
    if args.child or args.old is None:
        print(json.dumps(_child(args)))
        return
    olds = [str(t) for t in args.old]
    keep = [a for a in raw if a != "--old" and a not in olds]
    here = Path(__file__).resolve().parents[1]
    trees = {str(t): t.resolve() for t in args.old} | {"new": here}
    result: dict[str, list] = {name: [] for name in trees}
    for _ in range(args.repeats):
        for name, tree in trees.items():
            result[name].append(_spawn(tree, keep))
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
