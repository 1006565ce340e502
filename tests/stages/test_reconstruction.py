"""Weighted back-projection: geometry, fidelity to skimage's iradon, slabs, binning grid."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from skimage.transform import iradon, radon

from faket_dask.errors import InputError
from faket_dask.stages.projection import project
from faket_dask.stages.reconstruction import (
    Centring,
    approx_shrec_filter,
    bin_tilts,
    bin_volume_labels,
    reconstruct,
)

pytestmark = pytest.mark.timeout(120)

ANGLES = np.arange(-60.0, 61.0, 3.0)


def gaussian_blob(shape: tuple[int, int, int], centre: tuple[float, float, float], sigma: float):
    grids = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    r2 = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True))
    return np.exp(-r2 / (2 * sigma**2)).astype(np.float32)


def weighted_centroid(vol: np.ndarray) -> np.ndarray:
    """Centroid of the voxels above half the maximum (of a non-negative map)."""
    w = np.where(vol > 0.5 * vol.max(), vol, 0.0)
    idx = np.argwhere(w > 0)
    return (idx * w[w > 0][:, None]).sum(0) / w.sum()


# --------------------------------------------------------------------------- binning


@pytest.mark.parametrize("b", [2, 3, 4])
def test_bin_tilts_is_cubic_spline_zoom_on_block_centres(b: int) -> None:
    rng = np.random.default_rng(b)
    x = rng.normal(size=(3, 12 * b, 10 * b))
    got = bin_tilts(torch.from_numpy(x), b).numpy()
    ref = np.stack([ndi.zoom(t, 1 / b, order=3, grid_mode=True, mode="mirror") for t in x])
    assert got.shape == (3, 12, 10)
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_bin_tilts_odd_sizes_and_float32() -> None:
    x = torch.randn(2, 17, 9)
    out = bin_tilts(x, 2)
    assert out.shape == (2, 8, 4) and out.dtype == torch.float32
    assert torch.equal(bin_tilts(x, 1), x)


def test_bin_volume_labels_mode_nearest_and_ties() -> None:
    m = np.zeros((4, 4, 6), np.int16)
    m[0:2, 0:2, 0:2] = 5  # a full block of 5
    m[2:4, 2:4, 2:4] = 0
    m[2, 2, 2:4] = 7  # 2 of 8 voxels: background wins
    m[0:2, 0:2, 4] = 3  # 4 of 8: a tie with background goes to the label
    out = bin_volume_labels(m, 2)
    assert out.shape == (2, 2, 3) and out.dtype == np.int16
    assert out[0, 0, 0] == 5 and out[1, 1, 1] == 0 and out[0, 0, 2] == 3
    nearest = bin_volume_labels(m, 2, method="nearest")
    np.testing.assert_array_equal(nearest, m[1::2, 1::2, 1::2])
    t = bin_volume_labels(torch.from_numpy(m), 2)
    assert isinstance(t, torch.Tensor)
    np.testing.assert_array_equal(t.numpy(), out)
    # Trailing voxels that do not fill a block are dropped, as for the tilts.
    assert bin_volume_labels(np.zeros((5, 7, 9), np.uint8), 2).shape == (2, 3, 4)


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("filter", ["ramp", "approxShrec", "none"])
def test_point_reconstructs_at_its_position(filter: str) -> None:
    shape = (24, 6, 40)
    points = [(5, 1, 31), (12, 2, 20), (19, 4, 7)]
    vol = np.zeros(shape, np.float32)
    for p in points:
        vol[p] = 1.0
    tilts = project(torch.from_numpy(vol), ANGLES)
    rec = reconstruct(tilts, ANGLES, thickness=shape[0], filter=filter).numpy()
    assert rec.shape == shape and rec.dtype == np.float32
    for z, y, x in points:
        sl = -rec[:, y]  # projections are negated: dense is dark in the tomogram too
        found = np.unravel_index(np.argmax(sl), sl.shape)
        assert found == (z, x), (filter, (z, y, x), found)
        local = np.zeros_like(sl)
        local[z - 2 : z + 3, x - 2 : x + 3] = sl[z - 2 : z + 3, x - 2 : x + 3]
        assert np.all(np.abs(weighted_centroid(local) - (z, x)) < 1.0)


def test_thinner_tomogram_is_centred_on_the_volume() -> None:
    vol = np.zeros((30, 2, 32), np.float32)
    vol[18, :, 11] = 1.0
    tilts = project(torch.from_numpy(vol), ANGLES)
    rec = reconstruct(tilts, ANGLES, thickness=20).numpy()
    found = np.unravel_index(np.argmin(rec[:, 0]), rec[:, 0].shape)
    assert found == (18 - (30 // 2 - 20 // 2), 11)


def test_ramp_matches_skimage_iradon() -> None:
    """Mapping to iradon: our tilts are its sinogram transposed, ``(T, 1, N)``; iradon's
    default output is ``M = floor(N/√2)`` square, centred on index ``M // 2`` as ours is
    on ``thickness // 2`` (Z) and on ``N // 2`` (X), so with ``thickness = M`` its columns
    are our X ``[N//2 − M//2, N//2 − M//2 + M)``. The signs agree: both read detector
    ``x·cos θ − z·sin θ`` (rows of iradon's image are our Z)."""
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    image = resize(shepp_logan_phantom(), (64, 64), anti_aliasing=True)
    theta = np.arange(-60.0, 61.0, 2.0)
    sinogram = radon(image, theta, circle=False)  # (N, T), N = 91
    ref = iradon(sinogram, theta, filter_name="ramp", circle=False)
    n, m = sinogram.shape[0], ref.shape[0]
    tilts = torch.from_numpy(np.ascontiguousarray(sinogram.T[:, None, :]))
    rec = reconstruct(tilts, theta, thickness=m, filter="ramp").numpy()[:, 0]
    x0 = n // 2 - m // 2
    ours = rec[:, x0 : x0 + m]
    corr = np.corrcoef(ours.ravel(), ref.ravel())[0, 1]
    assert corr >= 0.99
    # In fact the same numbers: same filter, interpolation and scale.
    np.testing.assert_allclose(ours, ref, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("bin", [1, 2])
def test_slabwise_equals_whole(bin: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import faket_dask.stages.reconstruction as rec

    monkeypatch.setattr(rec, "_OP_BUDGET", 9 * 20 * 24 * 2)  # two tilts per operator chunk
    tilts = torch.randn(7, 26, 20, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    angles = np.linspace(-45, 45, 7)
    for filter in ("ramp", "approxShrec"):
        whole = reconstruct(tilts, angles, thickness=9, bin=bin, filter=filter)
        for slab in (1, 4, 5):
            part = reconstruct(tilts, angles, thickness=9, bin=bin, filter=filter, slab_size=slab)
            torch.testing.assert_close(part, whole, rtol=0, atol=1e-6)


def test_binned_tomogram_and_binned_masks_share_one_grid() -> None:
    """A particle lies at the same binned voxel in the bin-2 tomogram and the bin-2 mask."""
    shape = (48, 32, 64)
    for centre in [(26.5, 12.5, 40.5), (19.0, 17.0, 22.0), (30.3, 9.8, 47.6)]:
        density = gaussian_blob(shape, centre, sigma=1.6)
        grids = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
        inside = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) <= 3.0**2
        mask = np.where(inside, 4, 0).astype(np.uint8)
        tilts = project(torch.from_numpy(density), ANGLES)
        tomo = reconstruct(tilts, ANGLES, thickness=shape[0] // 2, bin=2, filter="ramp").numpy()
        binned = bin_volume_labels(mask, 2)
        assert tomo.shape == binned.shape == (24, 16, 32)
        # The continuous binned position of the centre: (c − (b − 1)/2) / b.
        expected = (np.array(centre) - 0.5) / 2
        peak = np.array(np.unravel_index(np.argmin(tomo), tomo.shape))
        mask_voxels = np.argwhere(binned == 4)
        assert np.all(np.abs(weighted_centroid(-tomo) - expected) < 0.25), centre
        assert np.all(np.abs(mask_voxels.mean(0) - expected) < 0.5), centre
        assert binned[tuple(peak)] == 4, centre
        assert np.all(np.abs(peak - expected) <= 0.5 + 1e-9), centre


@pytest.mark.parametrize("shape", [(33, 8, 47), (33, 8, 45)])
def test_binned_grid_with_odd_sizes(shape: tuple[int, int, int]) -> None:
    """Odd unbinned Z and X (b = 2 keeps Z//2 = n_b). For odd W with an even padded size
    (45 here: P = 64) skimage puts the volume centre one detector pixel right of W//2;
    ``detector_centre`` from ``detector_position`` accounts for it."""
    from faket_dask.stages.projection import detector_position

    density = gaussian_blob(shape, (20.5, 4.0, 30.5), sigma=1.2)
    tilts = project(torch.from_numpy(density), ANGLES)
    nz, _, nx = shape
    centre = detector_position(nz // 2, nx // 2, 0.0, (nz, nx))
    tomo = reconstruct(
        tilts, ANGLES, thickness=16, bin=2, filter="ramp", centring=Centring(detector_centre=centre)
    ).numpy()
    c = weighted_centroid(-tomo)
    np.testing.assert_allclose(c[[0, 2]], [10.0, 15.0], atol=0.25)


# --------------------------------------------------------------------------- filters


def test_approx_shrec_filter_matches_spec_values() -> None:
    f = approx_shrec_filter(512, 512).numpy()
    assert f.max() == pytest.approx(1.0)
    row = f[0]
    assert row[50] == pytest.approx(0.41, abs=0.01)
    assert row[100] == pytest.approx(0.75, abs=0.01)
    assert row[156] == pytest.approx(0.99, abs=0.011)
    assert row[256] == pytest.approx(0.67, abs=0.01)
    assert np.all(f[:, 0] == 0)  # the ramp removes DC along X
    # Centred on DC (FakET's one-sample offset is fixed): symmetric under k -> -k.
    np.testing.assert_allclose(f[1:, 1:], f[1:, 1:][::-1, ::-1], atol=1e-12)
    np.testing.assert_allclose(f[0, 1:], f[0, 1:][::-1], atol=1e-12)


def test_approx_shrec_filter_non_square() -> None:
    f = approx_shrec_filter(48, 80).numpy()
    assert f.shape == (48, 80) and f.max() == pytest.approx(1.0)
    np.testing.assert_allclose(f[1:, 1:], f[1:, 1:][::-1, ::-1], atol=1e-12)
    # Along X it is the same curve as the square filter of width 80, sampled on ky = 0.
    np.testing.assert_allclose(f[0], approx_shrec_filter(80, 80).numpy()[0] * 1.0, atol=0.02)


# --------------------------------------------------------------------------- errors, GPU


def test_bad_inputs_raise_input_error() -> None:
    with pytest.raises(InputError):
        reconstruct(np.zeros((4, 4), np.float32), [0, 1, 2, 3], thickness=4)
    with pytest.raises(InputError):
        reconstruct(np.zeros((3, 4, 4), np.float32), [0, 1], thickness=4)
    with pytest.raises(InputError):
        reconstruct(np.zeros((2, 4, 4), np.float32), [0, 1], thickness=4, filter="hann")
    with pytest.raises(InputError):
        reconstruct(np.zeros((2, 4, 4), np.float32), [0, 1], thickness=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_matches_cpu() -> None:
    gen = torch.Generator().manual_seed(1)
    tilts = torch.randn(21, 64, 64, generator=gen)
    angles = np.linspace(-60, 60, 21)
    for filter in ("ramp", "approxShrec"):
        cpu = reconstruct(tilts, angles, thickness=16, bin=2, filter=filter)
        gpu = reconstruct(tilts.cuda(), angles, thickness=16, bin=2, filter=filter, slab_size=5)
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4 * cpu.abs().max().item())
