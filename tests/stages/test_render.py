"""The renderer's kernels against the NumPy code they replaced, byte for byte, on random inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import faket_dask.stages.sample.objects as sample_objects
import faket_dask.stages.sample.render as sample_render
from faket_dask.config import config_from_dict
from faket_dask.stages.sample import BuildSpec, build_layout, render_slab
from faket_dask.stages.sample.render import SlabMemory, scatter_particles, solvent_rows
from faket_dask.stages.sample.render_kernels import fill_block, gather_runs, sort_runs
from faket_dask.stages.sample.rotation import VoxelBox
from faket_dask.stages.sample.spec import keyed_rng

pytestmark = pytest.mark.timeout(300)


# ---------------------------------------------------------------- the NumPy code, as it was


def _up(a: np.ndarray, n: int, s: int) -> np.ndarray:
    """Linear interpolation by ``s`` along the last axis to ``n`` samples (float32)."""
    out = np.empty((*a.shape[:-1], n), dtype=np.float32)
    step = a[..., 1:] - a[..., :-1]
    for r in range(min(s, n)):
        m = len(range(r, n, s))
        np.add(a[..., :m], step[..., :m] * np.float32(r / s), out=out[..., r::s])
    return out


def _plane(lattice: np.ndarray, nz: int, nx: int, s: int) -> np.ndarray:
    return _up(_up(lattice.T, nz, s).T.copy(), nx, s)


def _rows_numpy(lattices: np.ndarray, shape: tuple[int, int], y0: int, y1: int, s: int):
    """Rows ``[y0, y1)`` from lattice planes ``y0 // s ...`` (the NumPy renderer's loop)."""
    nz, nx = shape
    out = np.empty((nz, y1 - y0, nx), dtype=np.float32)
    k0 = y0 // s
    upper = _plane(lattices[0], nz, nx, s)
    for k in range(k0, (y1 - 1) // s + 1):
        lower, upper = upper, _plane(lattices[k - k0 + 1], nz, nx, s)
        step = upper - lower
        for y in range(max(y0, k * s), min(y1, (k + 1) * s)):
            r = y - k * s
            if r == 0:
                out[:, y - y0] = lower
            else:
                np.add(lower, step * np.float32(r / s), out=out[:, y - y0])
    return out


def _solvent_numpy(layout, y0: int, y1: int) -> np.ndarray:
    nz, _, nx = layout.shape
    level, rel, corr = layout.solvent
    s = max(1, round(corr / layout.pixel_spacing))
    nzc, nxc = (nz - 1) // s + 2, (nx - 1) // s + 2
    planes = []
    for k in range(y0 // s, (y1 - 1) // s + 2):
        p = keyed_rng(layout.spec.seed, layout.spec.sample_id, "solvent", k).standard_normal(
            (nzc, nxc)
        )
        planes.append(np.clip(level * (1.0 + rel * p), 0.0, None).astype(np.float32))
    return _rows_numpy(np.stack(planes), (nz, nx), y0, y1, s)


def _scatter_numpy(shape, y0, y1, boxes, positions, labels):
    """Each particle's voxels in rows ``[y0, y1)``, written one particle at a time."""
    density = np.zeros((shape[0], y1 - y0, shape[2]), dtype=np.float32)
    classes = np.zeros(density.shape, dtype=np.uint8)
    instances = np.zeros(density.shape, dtype=np.uint32)
    for box, pos, c, i in zip(boxes, positions, *labels, strict=True):
        zyx = box.zyx.astype(np.int64) + pos
        keep = (zyx[:, 1] >= y0) & (zyx[:, 1] < y1)
        idx = (zyx[keep, 0], zyx[keep, 1] - y0, zyx[keep, 2])
        density[idx], classes[idx], instances[idx] = box.values[keep], c, i
    return density, classes, instances


# ---------------------------------------------------------------- solvent


def _no_runs(cells: int) -> tuple[np.ndarray, ...]:
    return (
        np.zeros((0, 6), np.int32),
        np.zeros(cells + 1, np.int64),
        np.zeros(0, np.float32),
        np.zeros((0, 2), np.int64),
    )


def _solvent_kernel(lattices, y0, s, zs, out, band):
    """The kernel's solvent for Z rows ``zs`` of ``out`` (no runs, masks untouched)."""
    w = np.array([np.float32(r / s) for r in range(s)], dtype=np.float32)
    none = np.zeros((0, 0, 0), np.uint8)
    runs = _no_runs(out.shape[0] * -(-out.shape[1] // band))
    solvent = (lattices, s, w, 0.0)
    fill_block((*zs, False, band), solvent, y0, runs, out, none, none.astype(np.uint32))


@pytest.mark.parametrize("band", [1, 3, 1000])  # rows of a Z written at a time
@pytest.mark.parametrize(
    ("s", "nz", "nx", "y0", "y1"),
    [(1, 5, 7, 0, 4), (2, 9, 13, 3, 10), (3, 16, 31, 7, 8), (5, 11, 12, 1, 23), (4, 4, 4, 8, 17)],
)
def test_solvent_kernel_equals_numpy_byte_for_byte(s, nz, nx, y0, y1, band):
    rng = np.random.default_rng(s * 100 + nz)
    nzc, nxc = (nz - 1) // s + 2, (nx - 1) // s + 2
    planes = (y1 - 1) // s + 2 - y0 // s
    lattices = (rng.random((planes, nzc, nxc)) * 3.0).astype(np.float32)
    want = _rows_numpy(lattices, (nz, nx), y0, y1, s)
    got = np.full_like(want, np.nan)
    _solvent_kernel(lattices, y0, s, (0, nz), got, band)
    assert got.tobytes() == want.tobytes()
    # any split by Z ranges (the threads' work) writes the same bytes
    parts = np.full_like(want, np.nan)
    for z0, z1 in [(0, 1), (1, nz // 2), (nz // 2, nz)]:
        if z1 > z0:
            _solvent_kernel(lattices, y0, s, (z0, z1), parts, band)
    assert parts.tobytes() == want.tobytes()


def test_fill_block_writes_a_constant_solvent_and_clears_stale_masks():
    """Reused memory holds an old slab: every density voxel and mask voxel is written."""
    density = np.full((3, 4, 5), np.nan, np.float32)
    classes = np.full(density.shape, 7, np.uint8)
    instances = np.full(density.shape, 9, np.uint32)
    solvent = (np.zeros((0, 1, 1), np.float32), 1, np.zeros(1, np.float32), 0.3)
    fill_block((0, 3, True, 3), solvent, 0, _no_runs(6), density, classes, instances)
    assert density.tobytes() == np.full(density.shape, np.float32(0.3)).tobytes()
    assert not classes.any() and not instances.any()


def _layout(shape=(20, 37, 29), occupancy=0.1, corr=30.0, **extra):
    cfg = config_from_dict(
        {
            "seed": 4,
            "tilts": {"shape": list(shape[1:]), "pixel_spacing": 10.0},
            "sample": {
                "thickness": shape[0],
                "occupancy": occupancy,
                "solvent": 0.3,
                "solvent_correlation": corr,
                **extra,
            },
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_layout(BuildSpec.from_config(cfg, 2))


@pytest.mark.parametrize("threads", ["1", "2", "3"])
@pytest.mark.parametrize("corr", [10.0, 30.0, 45.0])
def test_solvent_rows_equal_numpy_for_any_slab_and_thread_count(monkeypatch, threads, corr):
    monkeypatch.setenv("FAKET_DASK_SAMPLE_THREADS", threads)
    layout = _layout(occupancy=0.0, corr=corr)
    for y0, y1 in [(0, 37), (0, 1), (5, 6), (3, 17), (29, 37)]:
        got = solvent_rows(layout, y0, y1)
        assert got.tobytes() == _solvent_numpy(layout, y0, y1).tobytes()
        assert got.min() >= 0.0 and got.std() > 0


# ---------------------------------------------------------------- particles


def _random_box(rng: np.random.Generator, reach: int, fraction: float) -> VoxelBox:
    """A random voxel set within ``reach`` of its position, sorted by (y, z, x)."""
    size = 2 * reach + 1
    mask = rng.random((size, size, size)) < fraction
    mask[reach, reach, reach] = True
    zyx = np.argwhere(mask) - reach
    zyx = zyx[np.lexsort((zyx[:, 2], zyx[:, 0], zyx[:, 1]))]
    values = rng.random(len(zyx)).astype(np.float32) + 0.5
    return VoxelBox(zyx.astype(np.int32), values)


@pytest.mark.parametrize("reach", [3, 130])  # int8 and int16 offsets
def test_scatter_equals_numpy_for_odd_slabs_and_boxes_at_the_faces(reach):
    rng = np.random.default_rng(reach)
    shape = (2 * reach + 3, 2 * reach + 9, 2 * reach + 5)
    n = 6 if reach < 10 else 3
    boxes = [_random_box(rng, reach, 0.3 if reach < 10 else 0.002) for _ in range(n)]
    # positions within the volume; the first two at the low and high faces on every axis
    lo, hi = np.full(3, reach), np.array(shape) - reach - 1
    positions = rng.integers(lo, hi + 1, size=(n, 3))
    positions[0], positions[1] = lo, hi
    # (random boxes may overlap: both write particle after particle, the last one wins)
    labels = (np.arange(n) % 3 + 1, np.arange(n) + 10)
    for y0, y1 in [(0, shape[1]), (0, 1), (1, 4), (reach, reach + 7), (shape[1] - 3, shape[1])]:
        want = _scatter_numpy(shape, y0, y1, boxes, positions, labels)
        got = tuple(np.zeros_like(a) for a in want)
        written = scatter_particles(got, y0, boxes, positions, labels)
        for g, w in zip(got, want, strict=True):
            assert g.tobytes() == w.tobytes()
        assert written >= np.count_nonzero(want[2])  # every voxel of the rows was written
        assert written == sum(
            int(np.count_nonzero((b.zyx[:, 1] + p[1] >= y0) & (b.zyx[:, 1] + p[1] < y1)))
            for b, p in zip(boxes, positions, strict=True)
        )


@pytest.mark.parametrize("threads", ["1", "3"])
def test_scatter_of_many_particles_in_threads_equals_numpy(monkeypatch, threads):
    monkeypatch.setenv("FAKET_DASK_SAMPLE_THREADS", threads)
    rng = np.random.default_rng(7)
    grid = np.stack(np.meshgrid(*[np.arange(2, 30, 4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    positions = grid[rng.permutation(len(grid))[:200]]  # 200 particles 4 voxels apart
    boxes = [_random_box(rng, 1, 0.5) for _ in positions]  # within 1 voxel: never overlapping
    labels = (rng.integers(1, 9, len(boxes)), np.arange(len(boxes)) + 1)
    for y0, y1 in [(0, 32), (3, 18), (31, 32)]:
        want = _scatter_numpy((32, 32, 32), y0, y1, boxes, positions, labels)
        got = tuple(np.zeros_like(a) for a in want)
        scatter_particles(got, y0, boxes, positions, labels)
        for g, w in zip(got, want, strict=True):
            assert g.tobytes() == w.tobytes()
        assert len(np.unique(want[2])) > 50 or y1 - y0 == 1


def test_runs_hold_every_voxel_of_the_rows_once_sorted_by_z():
    rng = np.random.default_rng(3)
    boxes = [_random_box(rng, 4, 0.4) for _ in range(5)]
    positions = np.array(
        [(4 + 9 * (k % 2), y, 4 + 9 * (k // 2)) for k, y in enumerate([4, 9, 12, 5, 8])]
    )
    y0, rows, nz = 6, 5, 18
    cap = sum(b.count for b in boxes)
    vals = np.full(cap, np.nan, np.float32)
    runs = np.zeros((cap, 6), np.int32)
    count = np.zeros(2, np.int64)
    for j, (box, pos) in enumerate(zip(boxes, positions, strict=True)):
        gather_runs(box.zyx, box.values, np.array([*pos, j, y0, rows]), vals, runs, count)
    band = 2  # cells of 2 rows of one Z
    ordered, starts, values = sort_runs(runs[: count[1]], vals, (nz, 3, band))
    cell = ordered[:, 0] * 3 + ordered[:, 1] // band
    assert np.all(np.diff(cell) >= 0) and starts[-1] == len(ordered) == count[1]
    assert np.all(runs[: count[1], 3] >= 1) and count[1] < count[0]  # runs of several voxels
    got = {}
    for r, (z, row, x, n, v, j) in enumerate(ordered):
        assert starts[cell[r]] <= r < starts[cell[r] + 1]
        for i in range(n):
            assert (z, row + y0, x + i) not in got
            got[(z, row + y0, x + i)] = (values[v + i], j)
    want = {}
    for j, (box, pos) in enumerate(zip(boxes, positions, strict=True)):
        for (z, y, x), v in zip(box.zyx.astype(np.int64) + pos, box.values, strict=True):
            if y0 <= y < y0 + rows:
                want[(z, y, x)] = (v, j)
    assert got == want and len(got) == count[0]


# ---------------------------------------------------------------- slab memory


def test_slab_memory_is_reused_only_once_every_array_and_view_is_gone():
    import torch

    memory = SlabMemory()
    dtypes = [np.dtype(np.float32), np.dtype(np.uint8), np.dtype(np.uint32)]

    def at(arrays):
        return [x.ctypes.data for x in arrays]

    a = memory.arrays((3, 4, 5), dtypes)
    assert [x.dtype for x in a] == dtypes and all(x.flags.c_contiguous for x in a)
    first = at(a)
    view, tensor, kept = a[1][:, 1:], torch.from_numpy(a[0]), a[2]
    del a
    b = memory.arrays((3, 4, 5), dtypes)  # a's arrays are still held: new memory
    second = at(b)
    assert not set(first) & set(second)
    del b
    c = memory.arrays((3, 4, 5), dtypes)  # b's memory, free again
    assert at(c) == second
    del view, tensor
    d = memory.arrays((3, 4, 5), dtypes)  # a's last array is still held, c's too
    assert not set(at(d)) & set(first + second)
    del kept, c
    e = memory.arrays((2, 4, 5), dtypes)  # smaller: kept memory that is free (a's was let go)
    assert at(e)[0] == second[0]
    memory.clear()
    assert not memory._slabs
    d[0][...], e[0][...] = 1, 2  # what was handed out stays usable
    assert d[0].sum() == 60 and e[0].sum() == 80


# ---------------------------------------------------------------- whole renders


@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_render_equals_the_numpy_renderer_with_a_small_box_cache(monkeypatch, threads):
    """Particles, membranes and beads, slabs of odd sizes, boxes re-rotated past the budget."""
    monkeypatch.setenv("FAKET_DASK_SAMPLE_THREADS", threads)
    monkeypatch.setattr(sample_objects, "BOX_CACHE_BYTES", 20_000)
    if threads == "2":  # bands of 3 rows at a time (as a wide volume's), not whole planes
        monkeypatch.setattr(sample_render, "_band", lambda rows, nx: min(rows, 3))
    extra = {"membranes": {"vesicles": 1, "planar": 1}, "fiducials": {"count": 2}}
    layout = _layout(shape=(36, 64, 56), occupancy=0.15, corr=20.0, **extra)
    voxels = sum(p.voxels for p in layout.objects if isinstance(p, sample_objects._Particle))
    assert layout._cache.nbytes <= 20_000 < voxels * 7  # most boxes are rotated again
    whole = [np.asarray(a) for a in render_slab(_layout((36, 64, 56), 0.15, 20.0, **extra), 0, 64)]
    # the independent reference: the NumPy solvent, then every object's dense region
    density = _solvent_numpy(layout, 0, 64)
    classes = np.zeros(density.shape, dtype=layout.class_dtype)
    instances = np.zeros(density.shape, dtype=np.uint32)
    ids = layout.particles["id"].to_numpy()
    for obj, label in zip(layout.objects, ids, strict=True):
        dens, mask = obj.region(obj.lo, obj.hi)
        sl = tuple(slice(int(a), int(b)) for a, b in zip(obj.lo, obj.hi, strict=True))
        np.copyto(density[sl], dens, where=mask)
        classes[sl][mask], instances[sl][mask] = obj.class_id, label
    for got, want in zip(whole, (density, classes, instances), strict=True):
        assert got.tobytes() == want.tobytes()
    assert len(np.unique(instances)) > 5  # particles and the others were there
    for size in (5, 13, 64):
        parts = [render_slab(layout, y0, min(64, y0 + size)) for y0 in range(0, 64, size)]
        for j, want in enumerate(whole):
            assert np.concatenate([p[j] for p in parts], axis=1).tobytes() == want.tobytes()
    for size in (7, 16):  # each slab dropped before the next: its memory is written again
        for y0 in range(0, 64, size):
            y1 = min(64, y0 + size)
            for got, want in zip(render_slab(layout, y0, y1), whole, strict=True):
                assert got.tobytes() == want[:, y0:y1].tobytes()


def test_box_cache_evicts_demoted_boxes_first():
    boxes = [VoxelBox(np.zeros((10, 3), np.int8), np.ones(10, np.float32)) for _ in range(3)]
    cache = sample_objects._BoxCache(budget=2 * boxes[0].nbytes)
    cache.put(0, boxes[0])
    cache.put(1, boxes[1])
    cache.demote(1)
    cache.demote(7)  # not cached: nothing happens
    cache.put(2, boxes[2])
    assert cache.get(1) is None and cache.get(0) is boxes[0] and cache.get(2) is boxes[2]
