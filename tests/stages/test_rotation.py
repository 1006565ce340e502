"""Rotated particles as voxel lists: a kernel with SciPy's bytes on the host, torch on a device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from faket_dask.config import config_from_dict
from faket_dask.stages.particles import quaternions_to_matrices, random_quaternions
from faket_dask.stages.sample import BuildSpec, rotation
from faket_dask.stages.sample.layout import _class_table, _load_templates
from faket_dask.stages.sample.rotation import rotate_batch, rotate_items, voxel_box
from faket_dask.stages.templates import builtin_template, make_template, rotate_template

pytestmark = pytest.mark.timeout(120)

SHAPES = [("ribosome", 1.0), ("rod", 0.6), ("lshape", 0.6), ("sphere", 1.0), ("ring", 0.6)]


def _templates():
    return [builtin_template(s, 10.0, scale=k) for s, k in SHAPES]


def test_voxel_box_lists_the_mask_by_rows_and_gives_back_the_dense_box():
    tpl = builtin_template("lshape", 10.0, scale=0.6)
    q = random_quaternions(np.random.default_rng(1), 1)
    box = rotate_template(tpl, quaternions_to_matrices(q)[0])
    vb = voxel_box(box)
    assert vb.zyx.dtype == np.int8 and vb.values.dtype == np.float32
    assert vb.count == int(box.mask.sum())
    # sorted by (y, z, x): rows first
    z, y, x = vb.zyx.astype(np.int64).T
    key = y * 10**6 + z * 10**3 + x
    assert (np.diff(key) > 0).all()
    # every voxel is a mask voxel of the box, with its density
    local = vb.zyx.astype(np.int64) - box.offset
    assert box.mask[tuple(local.T)].all()
    np.testing.assert_array_equal(vb.values, box.density[tuple(local.T)])
    np.testing.assert_array_equal(vb.offset, box.offset)
    assert vb.shape == box.shape
    assert vb.mask.tobytes() == box.mask.tobytes()
    assert vb.density.tobytes() == box.density.tobytes()


def test_rotate_voxels_is_the_dense_rotation_listed():
    """``rotate_voxels`` (SciPy on the same box, no dense crop) lists ``rotate_template``'s
    voxels and float32 values byte for byte, with its bounding box."""
    rng = np.random.default_rng(5)
    for tpl in _templates():
        for m in quaternions_to_matrices(random_quaternions(rng, 4)):
            want = voxel_box(rotate_template(tpl, m))
            got = rotation.rotate_voxels(tpl, m)
            np.testing.assert_array_equal(got.zyx.astype(np.int64), want.zyx.astype(np.int64))
            assert got.values.tobytes() == want.values.tobytes()
            np.testing.assert_array_equal(got.offset, want.offset)
            assert got.shape == want.shape


@pytest.mark.parametrize("chunk", [None, 3000])
def test_batched_torch_rotation_gives_scipys_voxels(monkeypatch, chunk):
    """The device path (run here on the CPU) against SciPy's ``affine_transform``, per voxel."""
    if chunk is not None:  # several chunks per call, boundaries inside a batch
        monkeypatch.setattr(rotation, "CHUNK_SAMPLES", chunk)
    qs = random_quaternions(np.random.default_rng(7), 24)
    for tpl in _templates():
        got = rotate_batch(tpl, qs, device="cpu")
        assert len(got) == len(qs)
        for q, vb in zip(qs, got, strict=True):
            ref = voxel_box(rotate_template(tpl, quaternions_to_matrices(q)[0]))
            np.testing.assert_array_equal(vb.zyx, ref.zyx)
            # float64 both ways, then float32: equal up to the last float64 bits
            np.testing.assert_allclose(vb.values, ref.values, rtol=1e-6, atol=0)
            assert (vb.values > tpl.level).all()


@pytest.mark.parametrize("scale", [0.6, 1.0])
def test_the_host_kernel_gives_scipys_bytes_and_bounds(scale):
    """The compiled kernel against SciPy's ``affine_transform`` itself, byte for byte."""
    qs = random_quaternions(np.random.default_rng(13), 40)
    # axis-aligned turns put coordinates exactly on the template's last index (its edge case)
    qs = np.concatenate([qs, [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [np.sqrt(0.5), 0, 0, np.sqrt(0.5)]]])
    for shape in ("ribosome", "rod", "lshape", "sphere", "ring", "proteasome"):
        tpl = builtin_template(shape, 10.0, scale=scale)
        m, lo, hi = rotation._boxes(tpl, quaternions_to_matrices(qs))
        got = rotation._kernel_boxes(tpl, m, lo, hi)
        for j, vb in enumerate(got):
            ref = rotation._voxels(tpl, m[j], lo[j], hi[j])  # SciPy
            assert vb.zyx.dtype == ref.zyx.dtype
            assert vb.zyx.tobytes() == ref.zyx.tobytes()
            assert vb.values.tobytes() == ref.values.tobytes()
            fresh = rotation.VoxelBox(ref.zyx.copy(), ref.values.copy())  # bounds searched
            np.testing.assert_array_equal(vb.offset, fresh.offset)
            assert vb.shape == fresh.shape


def test_the_kernels_float64_values_are_scipys_before_rounding():
    """Before the float32 rounding, so a different operation order shows on most voxels.

    (After it, one voxel in about 10^8 differs: the float32 test above cannot see it.)
    """
    qs = random_quaternions(np.random.default_rng(17), 12)
    for shape in ("ribosome", "lshape", "ring"):
        tpl = builtin_template(shape, 10.0)
        m, lo, hi = rotation._boxes(tpl, quaternions_to_matrices(qs))
        shape3 = hi - lo + 1
        boxes = np.ascontiguousarray(np.concatenate([lo, shape3], axis=1), dtype=np.int64)
        shifts = np.stack([tpl.centre + m[j] @ lo[j] for j in range(len(m))])
        size = int(np.prod(shape3, axis=1).sum())
        zyx, values = np.empty((size, 3), np.int32), np.empty(size, np.float64)
        counts, bounds = np.zeros(len(m), np.int64), np.zeros((len(m), 6), np.int64)
        out = (zyx, values, counts, bounds)
        level = np.float32(tpl.level)
        rotation._interpolate_boxes(rotation._prepared(tpl), m, shifts, boxes, level, out)
        start = 0
        for j in range(len(m)):
            ref = ndimage.affine_transform(
                tpl.density, m[j], offset=shifts[j], output_shape=tuple(shape3[j]),
                output=np.float64, order=1, mode="constant", cval=0.0, prefilter=False,
            )
            got = slice(start, start + int(counts[j]))
            local = zyx[got] - lo[j]
            assert counts[j] > 100
            assert values[got].tobytes() == ref[tuple(local.T)].tobytes()
            start += int(counts[j])


def test_the_kernel_compares_with_the_level_in_float32_as_numpy_does():
    """A voxel above the level in float64 but equal to it in float32 is not kept (NumPy 2).

    The orientation is one of 103,680 of a 400 x 3500^2 sample where this happens.
    """
    cfg = config_from_dict({"tilts": {"shape": [64, 64], "pixel_spacing": 10.0}})
    classes, _ = _class_table(cfg.sample)
    tpl = _load_templates(BuildSpec.from_config(cfg), classes)["ribosome"]
    q = np.array([0.7915684983586736, 0.3435650111683878, -0.2590926685027944, 0.4338817634277354])
    m, lo, hi = rotation._boxes(tpl, quaternions_to_matrices(q[None]))
    dense = ndimage.affine_transform(
        tpl.density, m[0], offset=tpl.centre + m[0] @ lo[0], output_shape=tuple(hi[0] - lo[0] + 1),
        output=np.float64, order=1, mode="constant", cval=0.0, prefilter=False,
    )
    edge = (dense > tpl.level) & (dense.astype(np.float32) <= np.float32(tpl.level))
    assert edge.any()  # the case exists: float64 says above, float32 says equal
    got = rotation._kernel_boxes(tpl, m, lo, hi)[0]
    ref = voxel_box(rotate_template(tpl, quaternions_to_matrices(q[None])[0]))
    assert got.zyx.tobytes() == ref.zyx.tobytes() and got.values.tobytes() == ref.values.tobytes()


def test_the_boxes_are_numpys_to_the_voxel():
    """The box start enters SciPy's coordinate arithmetic, so it must be NumPy's exactly.

    Axis-aligned turns put the rotated contour's extent exactly on integers, where a sum in
    another order could round to the other side: those go through NumPy's own product.
    """
    half = np.sqrt(0.5)
    turns = [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [half, half, 0, 0], [half, 0, 0, half]]
    qs = np.concatenate([turns, random_quaternions(np.random.default_rng(23), 300)])
    for shape in ("ribosome", "rod", "ring"):
        tpl = builtin_template(shape, 10.0)
        m, lo, hi = rotation._boxes(tpl, quaternions_to_matrices(qs))
        moved = np.matmul(tpl.surface, m)
        np.testing.assert_array_equal(lo, np.floor(moved.min(axis=1)).astype(np.int64) - 2)
        np.testing.assert_array_equal(hi, np.ceil(moved.max(axis=1)).astype(np.int64) + 2)


def test_the_kernel_keeps_zero_valued_voxels_when_the_level_is_negative():
    data = np.zeros((5, 5, 5))
    data[1:4, 1:4, 1:4] = 1.0
    tpl = make_template(data, 10.0, name="cube", source="test", threshold=0.5)
    tpl = type(tpl)(tpl.name, tpl.density, tpl.pixel_spacing, -0.25, tpl.source)
    q = random_quaternions(np.random.default_rng(2), 3)
    m, lo, hi = rotation._boxes(tpl, quaternions_to_matrices(q))
    for j, vb in enumerate(rotation._kernel_boxes(tpl, m, lo, hi)):
        ref = rotation._voxels(tpl, m[j], lo[j], hi[j])
        assert vb.count == int(np.prod(hi[j] - lo[j] + 1))  # every voxel of the box is kept
        assert vb.zyx.tobytes() == ref.zyx.tobytes()
        assert vb.values.tobytes() == ref.values.tobytes()


def test_rotate_items_keeps_the_order_across_templates_on_either_path():
    tpls = _templates()
    rng = np.random.default_rng(3)
    which = rng.integers(0, len(tpls), 30)
    items = [(tpls[int(i)], q) for i, q in zip(which, random_quaternions(rng, 30), strict=True)]
    host = rotate_items(items)  # the kernel, in threads
    batched = rotate_items(items, "cpu", batched=True)  # grouped by template, then put back
    assert len(host) == len(batched) == len(items)
    for (tpl, q), a, b in zip(items, host, batched, strict=True):
        ref = voxel_box(rotate_template(tpl, quaternions_to_matrices(q)[0]))
        assert a.zyx.tobytes() == ref.zyx.tobytes() and a.values.tobytes() == ref.values.tobytes()
        np.testing.assert_array_equal(b.zyx, ref.zyx)


def test_a_template_lost_by_the_rotation_keeps_one_voxel_at_its_position():
    data = np.zeros((5, 5, 5))
    data[2, 2, 3] = 1.0  # one voxel, off the reference point: rotated, it falls between voxels
    tpl = make_template(data, 10.0, name="dot", source="test", threshold=0.99)
    qs = random_quaternions(np.random.default_rng(0), 6)
    lost = 0
    for q, vb in zip(qs, rotate_batch(tpl, qs, "cpu"), strict=True):
        ref = voxel_box(rotate_template(tpl, quaternions_to_matrices(q)[0]))
        np.testing.assert_array_equal(vb.zyx, ref.zyx)
        np.testing.assert_array_equal(vb.values, ref.values)
        if vb.count == 1 and not vb.zyx.any():
            lost += 1
            assert vb.values[0] == np.float32(tpl.level)
    assert lost > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_rotation_equals_the_host():
    qs = random_quaternions(np.random.default_rng(11), 200)
    for tpl in _templates():
        gpu = rotate_batch(tpl, qs, "cuda")
        host = rotate_items([(tpl, q) for q in qs])
        for a, b in zip(gpu, host, strict=True):
            np.testing.assert_array_equal(a.zyx, b.zyx)
            np.testing.assert_allclose(a.values, b.values, rtol=1e-6, atol=0)
