"""Tests for stages.projection: skimage-radon geometry, slabs, sign convention, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.transform import radon

from faket_dask.errors import InputError
from faket_dask.stages import projection
from faket_dask.stages.projection import (
    Projector,
    clear_projector_cache,
    detector_position,
    padded_size,
    project,
    project_slab,
)

ANGLES = np.array([-90.0, -89.5, -60.0, -45.0, -13.7, 0.0, 2.0, 30.0, 60.0, 89.9, 90.0])


def reference(volume: np.ndarray, angles: np.ndarray, width: int) -> np.ndarray:
    """Build the spec §1.2 reference: per-Y-slice skimage radon, crop, negate -> (T, Y, W)."""
    ny = volume.shape[1]
    out = []
    for y in range(ny):
        sino = radon(volume[:, y, :].astype(np.float64), theta=angles, circle=False)  # (P, T)
        p = sino.shape[0]
        start = (p - width) // 2
        if start < 0:  # detector wider than skimage's padded one: zero-pad it
            sino = np.pad(sino, ((-start, width - p + start), (0, 0)))
            start = 0
        out.append(-sino[start : start + width].T)
    return np.stack(out, axis=1)


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize(
    ("shape", "width"),
    [
        ((9, 3, 9), None),  # odd cube
        ((10, 2, 10), None),  # even cube
        ((12, 3, 20), None),  # non-cubic, Z < X
        ((20, 2, 12), None),  # non-cubic, Z > X
        ((11, 2, 15), None),  # odd X with even padded size
        ((12, 2, 20), 16),  # detector narrower than X
        ((12, 2, 20), 27),  # detector wider than X (inside the padded detector)
        ((11, 2, 11), 7),  # odd, narrow
        ((5, 2, 5), 12),  # detector wider than skimage's padded one (P = 8)
    ],
)
def test_matches_skimage_radon(shape, width):
    rng = np.random.default_rng(sum(shape) + (width or 0))
    vol = rng.random(shape).astype(np.float32)
    w = width or shape[2]
    got = project(torch.from_numpy(vol), ANGLES, detector_width=width)
    assert got.shape == (len(ANGLES), shape[1], w)
    assert got.dtype == torch.float32
    want = reference(vol, ANGLES, w)
    assert rel_l2(got.numpy(), want) <= 1e-3
    # Per tilt as well, so one bad angle cannot hide in the total.
    for t in range(len(ANGLES)):
        assert rel_l2(got[t].numpy(), want[t]) <= 1e-3, ANGLES[t]


def test_matches_skimage_structured_phantom():
    # A sparse phantom with sharp edges near the slice border (not just smooth noise).
    vol = np.zeros((14, 2, 18), np.float32)
    vol[0, :, 3:7] = 2.0
    vol[5:9, 0, 12:17] = 1.0
    vol[13, 1, 0] = 3.0
    vol[7, 1, 17] = -1.5
    angles = np.arange(-60.0, 61.0, 7.5)
    got = project(torch.from_numpy(vol), angles).numpy()
    assert rel_l2(got, reference(vol, angles, 18)) <= 1e-3


def test_padded_size_matches_skimage():
    for nz, nx in [(9, 9), (10, 10), (12, 20), (20, 12), (1024, 1024), (180, 512)]:
        sino = radon(np.zeros((nz, nx)), theta=[0.0], circle=False)
        assert padded_size(nz, nx) == sino.shape[0]
    assert padded_size(1024, 1024) == 1449  # spec §1.2


def test_angles_as_list_and_tensor():
    vol = torch.rand(8, 2, 10, generator=torch.Generator().manual_seed(0))
    a = project(vol, [-30.0, 0.0, 45.0])
    b = project(vol, torch.tensor([-30.0, 0.0, 45.0]))
    c = project(vol, np.array([-30.0, 0.0, 45.0]))
    assert torch.equal(a, b)
    assert torch.equal(a, c)


# --------------------------------------------------------------------------- slabs


def test_slabwise_equals_one_pass():
    vol = torch.rand(13, 11, 17, generator=torch.Generator().manual_seed(1))
    whole = project(vol, ANGLES, slab_size=11)
    for slab in (1, 2, 4, 10):
        torch.testing.assert_close(
            project(vol, ANGLES, slab_size=slab), whole, rtol=1e-6, atol=1e-6
        )
    torch.testing.assert_close(project(vol, ANGLES), whole, rtol=1e-6, atol=1e-6)


def test_project_slab_stream_equals_project():
    clear_projector_cache()
    vol = torch.rand(10, 9, 14, generator=torch.Generator().manual_seed(2))
    whole = project(vol, ANGLES, detector_width=12)
    parts = [project_slab(vol[:, y0 : y0 + 4], ANGLES, 12) for y0 in range(0, 9, 4)]
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=1e-6, atol=1e-6)
    assert len(projection._PROJECTOR_CACHE) == 1  # the operator was reused across slabs
    # the pipeline's unchecked path (a rendered density is finite) gives the same bytes
    unchecked = project_slab(vol[:, :4].contiguous(), ANGLES, 12, check_finite=False)
    assert torch.equal(unchecked, parts[0])
    with pytest.raises(InputError, match="float32 torch tensor"):
        project_slab(vol[:, :4].numpy(), ANGLES, 12, check_finite=False)
    clear_projector_cache()


def test_many_angle_chunks_equal_one_chunk(monkeypatch):
    vol = torch.rand(12, 5, 16, generator=torch.Generator().manual_seed(3))
    angles = np.linspace(-60, 60, 13)
    whole = project(vol, angles)
    # A tiny budget forces one angle per operator chunk and one Y row per slab.
    monkeypatch.setattr(projection, "_TEMP_BUDGET", 1)
    proj = Projector((12, 16), angles)
    assert len(proj._chunks) == len(angles)
    assert proj.slab_size(5) == 1
    torch.testing.assert_close(project(vol, angles), whole, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(proj(vol), whole, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(proj(vol), whole, rtol=1e-6, atol=1e-6)  # cached operator


def test_projector_without_cache():
    vol = torch.rand(6, 3, 8, generator=torch.Generator().manual_seed(4))
    proj = Projector((6, 8), [0.0, 20.0], cache_bytes=0)
    first = proj(vol)
    assert proj._ops is None
    torch.testing.assert_close(proj(vol), first, rtol=0, atol=0)
    torch.testing.assert_close(project(vol, [0.0, 20.0]), first, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- convention


@pytest.mark.parametrize(("angle", "s_expected"), [(-60.0, 14), (0.0, 8), (60.0, -6)])
def test_sign_convention_off_centre_voxel(angle, s_expected):
    # spec §1.2: a blob at z=+12, x=+8 from the centre lands at +14 / +8 / -6.
    nz, nx = 41, 41
    cz, cx = nz // 2, nx // 2
    vol = torch.zeros(nz, 1, nx)
    vol[cz + 12, 0, cx + 8] = 1.0
    proj = project(vol, [angle])[0, 0]
    peak = int(torch.argmin(proj))  # negated: dense is dark
    centre_col = detector_position(cz, cx, angle, (nz, nx))
    assert peak - centre_col == s_expected
    s = detector_position(cz + 12, cx + 8, angle, (nz, nx)) - centre_col
    theta = np.deg2rad(angle)
    assert s == pytest.approx(8 * np.cos(theta) - 12 * np.sin(theta))
    assert round(s) == s_expected
    # Dense is dark, and the profile is exactly skimage's.
    assert float(proj.max()) <= 0.0
    want = reference(vol.numpy(), np.array([angle]), nx)[0, 0]
    np.testing.assert_allclose(proj.numpy(), want, atol=1e-6)


def test_sign_convention_blob_non_cubic_narrow_detector():
    # Same convention in a non-cubic volume read out on a narrower detector.
    nz, nx, w = 30, 52, 40
    cz, cx = nz // 2, nx // 2
    vol = torch.zeros(nz, 2, nx)
    vol[cz + 9 : cz + 12, :, cx + 4 : cx + 7] = 1.0  # 3x3 blob centred at (+10, +5)
    angles = [-60.0, -30.0, 0.0, 30.0, 60.0]
    out = project(vol, angles, detector_width=w)
    for t, angle in enumerate(angles):
        col = detector_position(cz + 10, cx + 5, angle, (nz, nx), detector_width=w)
        for y in range(2):
            profile = -out[t, y].numpy()
            centroid = float((profile * np.arange(w)).sum() / profile.sum())
            assert centroid == pytest.approx(col, abs=0.25), angle


def test_zero_tilt_aligns_with_x_grid():
    vol = torch.zeros(8, 1, 10)
    vol[3, 0, 7] = 1.0
    out = project(vol, [0.0])[0, 0]
    assert int(torch.argmin(out)) == 7
    assert detector_position(3, 7, 0.0, (8, 10)) == 7.0
    assert float(out[7]) == pytest.approx(-1.0)


def test_detector_position_broadcasts():
    pos = detector_position(np.array([0.0, 4.0]), np.array([1.0, 2.0]), 30.0, (8, 8))
    assert pos.shape == (2,)


# --------------------------------------------------------------------------- errors


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


def test_rejects_2d_volume():
    with pytest.raises(InputError) as exc:
        project(torch.zeros(8, 8), [0.0])
    assert "3-D" in _one_line(exc)


def test_rejects_nan_and_inf():
    vol = torch.zeros(4, 3, 5)
    vol[1, 2, 3] = float("nan")
    with pytest.raises(InputError) as exc:
        project(vol, [0.0])
    assert "NaN" in _one_line(exc)
    vol[1, 2, 3] = float("inf")
    with pytest.raises(InputError):
        project(vol, [0.0])
    with pytest.raises(InputError):
        project_slab(vol, [0.0])


def test_rejects_missing_or_bad_angles():
    vol = torch.zeros(4, 3, 5)
    with pytest.raises(InputError) as exc:
        project(vol, [])
    assert "angle" in _one_line(exc)
    with pytest.raises(InputError):
        project(vol, [0.0, float("nan")])
    with pytest.raises(InputError):
        project(vol, ["a"])


def test_rejects_bad_width_slab_and_type():
    vol = torch.zeros(4, 3, 5)
    for bad in (0, -3, 2.5):
        with pytest.raises(InputError):
            project(vol, [0.0], detector_width=bad)
    for bad in (0, -1, 1.5):
        with pytest.raises(InputError):
            project(vol, [0.0], slab_size=bad)
    with pytest.raises(InputError):
        project([[[0.0]]], [0.0])
    with pytest.raises(InputError):
        project(torch.zeros(0, 3, 5), [0.0])
    with pytest.raises(InputError):
        Projector((4, 5), [0.0])(torch.zeros(4, 3, 6))


def test_other_real_dtypes_are_converted():
    vol = torch.rand(5, 2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    out = project(vol, [10.0])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, project(vol.float(), [10.0]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    vol = torch.rand(20, 6, 24, generator=torch.Generator().manual_seed(6))
    cpu = project(vol, ANGLES, detector_width=22)
    gpu = project(vol.cuda(), ANGLES, detector_width=22, slab_size=4)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)
