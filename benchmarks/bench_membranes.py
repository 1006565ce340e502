"""Benchmark: membranes and gold beads placed as runs (kernels) against the dense masks (old).

Places the ``bench_sample`` config's 4 vesicles, 1 planar disc and 10 beads on an occupancy
grid with the builder's ``_draw_membranes`` and ``_draw_beads``, once with the compiled runs
(the builder's code) and once with builder 2's dense masks (``_old_place_object`` below, the
code as it was: each candidate's whole box, tested and marked with NumPy), alternating
(old, new, new, old, ...). Checks that both give the same objects and the same grid. Reports
wall and process CPU seconds (medians) of the draws and of the table's voxel counts
(``count_*``), on a grid whose pages are already touched (``warm``: the
placement's own work) and on a fresh one (``fresh``: the first writes to the grid's pages,
which the particles that follow would pay otherwise, included).

    python benchmarks/bench_membranes.py [--shape Z Y X] [--occupancy 0.1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

from faket_dask.errors import InputError
from faket_dask.stages.sample import BuildSpec, layout
from faket_dask.stages.sample.objects import _count_voxels
from faket_dask.stages.sample.placement import OccupancyGrid
from faket_dask.stages.sample.spec import keyed_rng

sys.path.insert(0, str(Path(__file__).parent))
from bench_sample import _config


def _old_place(occ, rng, pieces_at, low, high, probe, attempts):
    """Builder 2's ``_place``: dense ``(lo, mask)`` pieces tested and marked with NumPy."""
    tried = 0
    while tried < attempts:
        n = min(layout._BATCH, attempts - tried)
        cand = rng.integers(low, high + 1, size=(n, 3), dtype=np.int64)
        tried += n
        if probe is not None:
            cand = cand[~occ.taken(cand + probe)]
        for pos in cand:
            pieces = pieces_at(pos)
            if not any(m.any() for _, m in pieces):
                continue
            if occ.free(pieces):
                occ.mark(pieces)
                return pos, pieces
    return None


def _old_place_object(occ, rng, make, bounds, probe, attempts, refusal):
    low, high = bounds
    placed = _old_place(occ, rng, lambda p: list(make(p).chunks()), low, high, probe, attempts)
    if placed is None:
        raise InputError(refusal)
    return make(placed[0])


def _old_count(obj) -> int:
    """Builder 2's ``_count_voxels`` of a membrane or bead: its dense mask's voxels."""
    return int(sum(int(m.sum()) for _, m in obj.chunks()))


def _draw(spec: BuildSpec, old: bool, warm: bool) -> tuple[dict, OccupancyGrid, list, list]:
    occ = OccupancyGrid(spec.shape)
    if warm:
        occ.flat[:: 1 << 12] = False  # every page written once: no first-touch faults timed
    rng = keyed_rng(spec.seed, spec.sample_id, "sample")
    patch = mock.patch.object(layout, "_place_object", _old_place_object) if old else None
    if patch is not None:
        patch.start()
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        objs = layout._draw_membranes(spec, rng, occ, 7)
        objs += layout._draw_beads(spec, rng, occ, 8)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()  # the table's voxel counts
        counts = [_old_count(o) if old else _count_voxels(o) for o in objs]
        count_wall, count_cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        if patch is not None:
            patch.stop()
    times = {"wall_s": wall, "cpu_s": cpu, "count_wall_s": count_wall, "count_cpu_s": count_cpu}
    return times, occ, objs, counts


def _same(a: tuple, b: tuple) -> bool:
    (_, occ_a, objs_a, counts_a), (_, occ_b, objs_b, counts_b) = a, b
    keys = ("centre", "radius", "half", "normal", "lo", "hi")

    def fields(o):
        return [np.asarray(getattr(o, k)).tolist() for k in keys if hasattr(o, k)]

    same_objs = [fields(o) for o in objs_a] == [fields(o) for o in objs_b]
    same_grid = bool(np.array_equal(occ_a.flat, occ_b.flat))
    return same_objs and same_grid and counts_a == counts_b


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", type=int, nargs=3, default=(256, 1024, 1024))
    ap.add_argument("--pixel-spacing", type=float, default=10.0)
    ap.add_argument("--occupancy", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--orientation-grid", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3, help="old/new/new/old cycles")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    spec = BuildSpec.from_config(_config(args, tuple(args.shape)))
    small = BuildSpec.from_config(_config(args, (128, 256, 256)))
    _draw(small, False, True)  # compiled kernels loaded
    out: dict = {"shape": list(args.shape), "b": OccupancyGrid(spec.shape).b}
    for mode in ("warm", "fresh"):
        times: dict[str, list] = {"old": [], "new": []}
        for _ in range(args.repeat):
            for old in (True, False, False, True):
                res = _draw(spec, old, mode == "warm")
                times["old" if old else "new"].append(res[0])
                if old:
                    ref = res
                else:
                    new = res
            if not _same(ref, new):
                raise SystemExit("old and new placements differ")
        for k, v in times.items():
            for key in v[0]:
                out[f"{mode}_{k}_{key}"] = float(np.median([t[key] for t in v]))
    out["identical"] = True
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
