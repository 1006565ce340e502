"""The sample builder: labels, no overlap, counts, abundances, orientations, geometry, slabs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import stats

import faket_dask.stages.sample.objects as sample_objects
from faket_dask.config import config_from_dict
from faket_dask.errors import InputError
from faket_dask.io.mrc import write_mrc
from faket_dask.stages.particles import quaternions_to_matrices, to_csv, to_shrec
from faket_dask.stages.sample import (
    BUILDER_VERSION,
    BuildSpec,
    GrandModelLayout,
    SampleLayout,
    build_layout,
    build_sample,
    render_slab,
)

pytestmark = pytest.mark.timeout(120)

SMALL = [  # small shapes that pack densely into a 24 x 48 x 48 volume at 10 Å
    {"name": "ball", "template": "builtin:sphere", "abundance": 1.0},
    {"name": "ring", "template": "builtin:ring:0.6", "abundance": 1.0},
    {"name": "rod", "template": "builtin:rod:0.5", "abundance": 1.0},
    {"name": "corner", "template": "builtin:lshape:0.5", "abundance": 1.0},
]


def make_spec(shape=(24, 48, 48), ps=10.0, seed=0, sample_id=0, **sample) -> BuildSpec:
    sample.setdefault("thickness", shape[0])
    cfg = config_from_dict(
        {"seed": seed, "tilts": {"shape": list(shape[1:]), "pixel_spacing": ps}, "sample": sample}
    )
    return BuildSpec.from_config(cfg, sample_id)


def object_masks(layout: SampleLayout):
    """(id, class_id, full-volume boolean mask) of every object, rendered alone."""
    for obj, (_, row) in zip(layout.objects, layout.particles.iterrows(), strict=True):
        full = np.zeros(layout.shape, dtype=bool)
        _, mask = obj.region(obj.lo, obj.hi)
        full[tuple(slice(int(a), int(b)) for a, b in zip(obj.lo, obj.hi, strict=True))] = mask
        yield int(row["id"]), int(row["class_id"]), full


def crowded(**kw):
    return make_spec(
        particles=SMALL,
        occupancy=0.22,
        membranes={
            "vesicles": 1,
            "vesicle_radius": [80, 110],
            "planar": 1,
            "planar_radius": [100, 150],
        },
        fiducials={"count": 2, "radius": 25},
        **kw,
    )


def test_every_particle_voxel_carries_its_class_and_id():
    s = build_sample(crowded())
    table = s.particles
    assert set(table["kind"]) == {"particle", "membrane", "fiducial"}
    assert s.class_mask.dtype == np.uint8 and s.instance_mask.dtype == np.uint32
    assert s.density.dtype == np.float32 and s.density.shape == (24, 48, 48)
    for pid, cid, mask in object_masks(s.layout):
        assert mask.any()
        # exactly this object's voxels carry its id, and all of them carry its class
        np.testing.assert_array_equal(s.instance_mask == pid, mask)
        assert (s.class_mask[mask] == cid).all()
        assert (s.density[mask] > 0).all()
    # no solvent: density exactly where something is labeled; the table's voxel counts agree
    np.testing.assert_array_equal(s.density > 0, s.instance_mask > 0)
    np.testing.assert_array_equal(s.class_mask > 0, s.instance_mask > 0)
    counts = np.bincount(s.instance_mask.ravel(), minlength=len(table) + 1)[1:]
    np.testing.assert_array_equal(counts, table["voxels"].to_numpy())
    # classes: ids 1..K for the particle classes, then membrane and fiducial
    assert s.layout.classes == {
        1: "ball",
        2: "ring",
        3: "rod",
        4: "corner",
        5: "membrane",
        6: "fiducial",
    }
    names = table.set_index("class_id")["class_name"].to_dict()
    assert all(s.layout.classes[k] == v for k, v in names.items())
    # the table's position is the particle's reference point (inside its box)
    parts = table[table["kind"] == "particle"]
    for obj, (_, row) in zip(s.layout.objects, parts.iterrows(), strict=False):
        zyx = np.array([row["z"], row["y"], row["x"]])
        assert (obj.lo <= zyx).all() and (zyx < obj.hi).all()


@pytest.mark.parametrize(("grid_bytes", "factor"), [(None, 1), (8000, 2)])
def test_zero_voxel_overlap_at_20_percent(monkeypatch, grid_bytes, factor):
    if grid_bytes is not None:  # force a coarse occupancy grid (one cell per 2^3 voxels)
        monkeypatch.setattr(sample_objects, "OCCUPANCY_GRID_BYTES", grid_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the coarse grid is conservative and may jam earlier
        layout = build_layout(crowded())
    assert layout.info["occupancy_grid_factor"] == factor
    cover = np.zeros(layout.shape, dtype=np.int32)
    for _, _, mask in object_masks(layout):
        cover += mask
    assert cover.max() == 1  # no voxel belongs to two objects (particles, membranes, beads)
    parts = layout.particles["kind"] == "particle"
    occupancy = layout.particles.loc[parts, "voxels"].sum() / np.prod(layout.shape)
    assert occupancy == pytest.approx(layout.info["particle_occupancy"])
    if factor == 1:  # exact voxel masks reach the asked 22%
        assert not layout.info["jammed"]
        assert occupancy >= 0.2
    else:
        assert occupancy >= 0.1


def test_exact_counts():
    spec = make_spec(
        particles=[
            {"name": "ball", "template": "builtin:sphere", "count": 7},
            {"name": "rod", "template": "builtin:rod:0.5", "count": 3},
            {"name": "none", "template": "builtin:ring:0.6", "count": 0},
        ],
        fiducials={"count": 2, "radius": 20},
        membranes={"vesicles": 1, "vesicle_radius": [60, 80]},
    )
    layout = build_layout(spec)
    counts = layout.particles["class_name"].value_counts().to_dict()
    assert counts == {"ball": 7, "rod": 3, "fiducial": 2, "membrane": 1}
    assert layout.info["counts"]["none"] == 0
    # ids: particles first, then membranes, then beads
    assert list(layout.particles["id"]) == list(range(1, 14))
    assert list(layout.particles["kind"]) == ["particle"] * 10 + ["membrane"] + ["fiducial"] * 2


def test_counts_that_cannot_fit_raise():
    spec = make_spec(
        particles=[{"name": "big", "template": "builtin:sphere", "count": 400}],
        placement_attempts=200,
    )
    with pytest.raises(InputError, match="could not place"):
        build_layout(spec)
    spec = make_spec(particles=[{"name": "huge", "template": "builtin:ribosome", "count": 1}])
    with pytest.raises(InputError, match="does not fit"):
        build_layout(spec)
    # membranes and beads that cannot all fit name the object and the knob to turn
    crowded = {
        "membranes": {"membranes": {"vesicles": 40, "vesicle_radius": [150, 200]}},
        "planar": {"membranes": {"planar": 40, "planar_radius": [200, 240]}},
        "beads": {"fiducials": {"count": 400, "radius": 60}},
    }
    expected = {
        "membranes": r"vesicle \d+ of 40 .*sample\.membranes\.vesicles",
        "planar": r"planar membrane \d+ of 40 .*sample\.membranes\.planar",
        "beads": r"gold bead \d+ of 400 .*sample\.fiducials\.count",
    }
    for name, extra in crowded.items():
        spec = make_spec(particles=[], occupancy=0, placement_attempts=50, **extra)
        with pytest.raises(InputError, match=expected[name]):
            build_layout(spec)


def test_abundances_within_sampling_error():
    classes = [
        {"name": "a", "template": "builtin:sphere", "abundance": 1.0},
        {"name": "b", "template": "builtin:sphere:0.8", "abundance": 2.0},
        {"name": "c", "template": "builtin:ring:0.5", "abundance": 3.0},
    ]
    counts = np.zeros(3)
    quats = []
    for sid in range(6):
        layout = build_layout(
            make_spec(shape=(24, 80, 80), sample_id=sid, particles=classes, occupancy=0.15)
        )
        vc = layout.particles["class_name"].value_counts()
        counts += [vc.get(n, 0) for n in "abc"]
        quats.append(layout.particles[["qw", "qx", "qy", "qz"]].to_numpy())
    n = counts.sum()
    assert n > 400
    p = np.array([1, 2, 3]) / 6
    assert stats.chisquare(counts, n * p).pvalue > 1e-3
    # orientations of the placed particles stay uniform: rotated z-axis cos(theta) ~ U[-1, 1]
    zaxis = quaternions_to_matrices(np.concatenate(quats))[:, :, 2]
    assert stats.kstest(zaxis[:, 2], stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3


@pytest.mark.parametrize("shape", [(24, 40, 48), (23, 33, 41)])
def test_particle_lands_at_its_detector_position(shape):
    from faket_dask.stages.projection import detector_position, project

    spec = make_spec(
        shape=shape, particles=[{"name": "b", "template": "builtin:sphere", "count": 1}], seed=11
    )
    s = build_sample(spec)
    row = s.particles.iloc[0]
    x, y, z = float(row["x"]), int(row["y"]), float(row["z"])
    assert (x, z) != (shape[2] // 2, shape[0] // 2)  # off-centre, so the test means something
    angles = np.arange(-60.0, 61.0, 15.0)
    tilts = project(torch.from_numpy(s.density), angles).numpy()  # (T, Y, W), dense is dark
    cols = np.arange(tilts.shape[2])
    for t, angle in enumerate(angles):
        signal = -tilts[t, y]
        found = float((signal * cols).sum() / signal.sum())
        want = detector_position(z, x, angle, (shape[0], shape[2]))
        assert abs(found - want) < 0.25, (angle, found, want)
    # and the particle's row is the one that is darkest along Y (the tilt axis)
    assert abs(int(np.argmin(tilts[len(angles) // 2].min(axis=1))) - y) <= 1


def test_slab_wise_equals_whole():
    spec = make_spec(
        particles=SMALL,
        occupancy=0.12,
        membranes={
            "vesicles": 1,
            "vesicle_radius": [80, 110],
            "planar": 1,
            "planar_radius": [100, 150],
        },
        fiducials={"count": 2, "radius": 25},
        solvent=0.3,
        solvent_correlation=30.0,
    )
    layout = build_layout(spec)
    whole = render_slab(layout, 0, 48)
    for size in (1, 5, 17):
        parts = [render_slab(layout, y0, min(48, y0 + size)) for y0 in range(0, 48, size)]
        for k in range(3):
            joined = np.concatenate([p[k] for p in parts], axis=1)
            assert joined.dtype == whole[k].dtype
            assert joined.tobytes() == whole[k].tobytes()
    # a fresh layout (empty box cache) renders an arbitrary slab the same way
    again = build_layout(spec)
    mid = render_slab(again, 13, 29)
    for k in range(3):
        assert mid[k].tobytes() == whole[k][:, 13:29].tobytes()
    # solvent fills the background only, is non-negative and varies about its level
    d, c = whole[0], whole[1]
    bg = d[c == 0]
    assert (bg >= 0).all() and abs(bg.mean() - 0.3) < 0.03 and bg.std() > 0.01
    # a torch tensor on request
    t, _, _ = render_slab(layout, 0, 8, device="cpu")
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(whole[0][:, :8]))
    with pytest.raises(InputError, match="outside"):
        render_slab(layout, 40, 60)


def test_same_seed_same_bytes_other_seed_differs():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some seeds jam just short of 22%
        a = build_sample(crowded(seed=3))
        b = build_sample(crowded(seed=3))
        c = build_sample(crowded(seed=4))
        d = build_sample(crowded(seed=3, sample_id=1))
    for x, y in zip(a[:3], b[:3], strict=True):
        assert x.tobytes() == y.tobytes()
    assert a.particles.equals(b.particles)
    assert a.instance_mask.tobytes() != c.instance_mask.tobytes()
    assert a.instance_mask.tobytes() != d.instance_mask.tobytes()


def test_default_mix_builds_a_populated_sample():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # big ribosomes may jam such a small volume
        s = build_sample(make_spec(shape=(32, 64, 64), ps=20.0))
    table = s.particles
    assert (table["kind"] == "particle").sum() >= 10
    assert table["class_name"].nunique() >= 4
    assert len(s.layout.classes) == 8  # six shapes + membrane + fiducial


def test_import_grand_model(tmp_path):
    s = build_sample(crowded())
    vol = tmp_path / "grandmodel.mrc"
    write_mrc(vol, s.density, voxel_size=10.0)
    write_mrc(tmp_path / "class_mask.mrc", s.class_mask.astype(np.float32), voxel_size=10.0)
    write_mrc(tmp_path / "occupancy_mask.mrc", s.instance_mask.astype(np.float32), voxel_size=10.0)
    to_csv(s.particles, tmp_path / "particles.csv")
    spec = make_spec(
        grand_model=str(vol),
        grand_model_class_mask=str(tmp_path / "class_mask.mrc"),
        grand_model_instance_mask=str(tmp_path / "occupancy_mask.mrc"),
        grand_model_particles=str(tmp_path / "particles.csv"),
    )
    layout = build_layout(spec)
    assert isinstance(layout, GrandModelLayout)
    got = build_sample(layout, slab_size=7)
    for x, y in zip(got[:3], s[:3], strict=True):
        np.testing.assert_array_equal(x, y)
    assert got[1].dtype == np.uint8 and got[2].dtype == np.uint32
    np.testing.assert_allclose(got.particles[["x", "y", "z"]], s.particles[["x", "y", "z"]])
    assert layout.classes[5] == "membrane"
    # a SHREC-style list (names only) matched to the mask labels by name
    to_shrec(s.particles, tmp_path / "particle_locations.txt")
    names = ["ball", "ring", "rod", "corner", "vesicle", "fiducial"]
    shrec = build_layout(
        make_spec(
            grand_model=str(vol),
            grand_model_class_mask=str(tmp_path / "class_mask.mrc"),
            grand_model_particles=str(tmp_path / "particle_locations.txt"),
            grand_model_classes=names,
        )
    )
    np.testing.assert_array_equal(shrec.particles["class_id"], s.particles["class_id"])
    assert shrec.classes == dict(enumerate(names, start=1))
    # a detector that does not match the model is refused
    with pytest.raises(InputError, match=r"tilts\.shape"):
        build_layout(make_spec(shape=(24, 40, 48), grand_model=str(vol)))
    with pytest.raises(InputError, match="differs"):
        build_layout(make_spec(ps=12.0, grand_model=str(vol)))


def test_box_cache_returns_the_rotated_bytes_and_evicts_past_its_budget():
    from faket_dask.stages.sample.rotation import voxel_box
    from faket_dask.stages.templates import builtin_template, rotate_template

    tpl = builtin_template("ribosome", 10.0)
    rng = np.random.default_rng(3)
    boxes = [rotate_template(tpl, quaternions_to_matrices(q)[0]) for q in rng.normal(size=(3, 4))]
    cache = sample_objects._BoxCache(budget=10**9)
    for i, box in enumerate(boxes):
        cache.put(i, voxel_box(box))
    for i, box in enumerate(boxes):
        got = cache.get(i)  # the voxel list gives back the dense box, byte for byte
        assert got.density.tobytes() == box.density.tobytes()
        assert got.mask.tobytes() == box.mask.tobytes() and got.mask.dtype == bool
        np.testing.assert_array_equal(got.offset, box.offset)
    plain = sum(b.density.nbytes + b.mask.nbytes for b in boxes)
    voxels = sum(int(b.mask.sum()) for b in boxes)
    assert cache.nbytes == 7 * voxels < plain  # int8 offsets and float32 values per voxel
    small = sample_objects._BoxCache(budget=cache.nbytes - 1)
    for i, box in enumerate(boxes):
        small.put(i, voxel_box(box))
    assert small.get(0) is None and small.get(2) is not None  # least recently used out


def test_orientation_grid_reuses_rotations_and_keeps_labels_and_slabs():
    spec = make_spec(
        particles=SMALL,
        occupancy=0.15,
        orientation_grid=5,
        fiducials={"count": 1, "radius": 25},
        membranes={"vesicles": 1, "vesicle_radius": [60, 80]},
        solvent=0.2,
    )
    layout = build_layout(spec)
    parts = layout.particles[layout.particles["kind"] == "particle"]
    assert len(parts) > 20
    for _, group in parts.groupby("class_name"):  # at most 5 orientations per class
        assert len(group[["qw", "qx", "qy", "qz"]].drop_duplicates()) <= 5
    # each particle's voxels are its rotated template's (rotated again from its quaternion)
    s = build_sample(layout)
    for pid, cid, mask in object_masks(layout):
        np.testing.assert_array_equal(s.instance_mask == pid, mask)
        assert (s.class_mask[mask] == cid).all()
    counts = np.bincount(s.instance_mask.ravel(), minlength=len(layout.particles) + 1)[1:]
    np.testing.assert_array_equal(counts, layout.particles["voxels"].to_numpy())
    whole = render_slab(layout, 0, 48)
    parts_ = [render_slab(layout, y0, min(48, y0 + 7)) for y0 in range(0, 48, 7)]
    for k in range(3):
        assert np.concatenate([p[k] for p in parts_], axis=1).tobytes() == whole[k].tobytes()
    assert layout.summary()["builder"] == BUILDER_VERSION == 2


def test_orientation_grid_orientations_stay_uniform_over_samples():
    quats = []
    for sid in range(8):
        layout = build_layout(
            make_spec(
                shape=(24, 64, 64),
                sample_id=sid,
                particles=[{"name": "b", "template": "builtin:rod:0.5", "count": 60}],
                orientation_grid=16,
            )
        )
        quats.append(layout.particles[["qw", "qx", "qy", "qz"]].to_numpy())
    zaxis = quaternions_to_matrices(np.concatenate(quats))[:, :, 2]
    assert stats.kstest(zaxis[:, 2], stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3
    # the grid differs between samples (keyed by sample id)
    assert not np.array_equal(np.unique(quats[0], axis=0), np.unique(quats[1], axis=0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_render_equals_cpu():
    layout = build_layout(crowded())
    on_gpu = build_layout(crowded(), device="cuda")  # particles rotated on the GPU, batched
    assert on_gpu.particles.equals(layout.particles)  # the same layout
    for y0, y1 in [(0, 48), (5, 17)]:
        cpu = render_slab(layout, y0, y1, device="cpu")
        gpu = render_slab(on_gpu, y0, y1, device="cuda")
        assert gpu[0].device.type == "cuda"
        torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=1e-6, atol=1e-6)
        assert gpu[1].tobytes() == cpu[1].tobytes() and gpu[2].tobytes() == cpu[2].tobytes()
    again = build_layout(crowded())  # the layout does not depend on the device
    assert again.particles.equals(layout.particles)
