"""Per-image statistics: matching a target mean and std, against the reference's order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faket_dask.errors import InputError
from faket_dask.stages import calibrated_noise, noise_apply
from faket_dask.stages._stats import match_mean_std
from faket_dask.stages.style import transfer

pytestmark = pytest.mark.timeout(60)

H, W = 16, 20


def test_match_mean_std_generic():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(size=(2, 3, H, W)) * 4 + 1)
    tm = np.array([[0.0, 1.0, -2.0], [5.0, 6.0, 7.0]])
    ts = np.array([[1.0, 2.0, 3.0], [0.5, 0.25, 9.0]])
    y = match_mean_std(x, tm, ts)
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_allclose(y.mean(dim=(-2, -1)).numpy(), tm, atol=1e-12)
    np.testing.assert_allclose(y.std(dim=(-2, -1), correction=0).numpy(), ts, rtol=1e-12)
    # std first, then mean: the reference's order, written out
    x0 = x[1, 2].numpy()
    ref = x0 / x0.std() * 9.0
    ref = ref - ref.mean() + 7.0
    np.testing.assert_allclose(y[1, 2].numpy(), ref, rtol=1e-14, atol=1e-13)
    one = match_mean_std(x[0, 0].float(), 2.0, 3.0)
    assert one.dtype == torch.float32
    with pytest.raises(InputError, match="shapes"):
        match_mean_std(x, tm[0], ts[0])
    with pytest.raises(InputError, match="> 0"):
        match_mean_std(x, tm, -ts)
    with pytest.raises(InputError, match="constant"):
        match_mean_std(torch.ones(2, H, W), [0.0, 0.0], [1.0, 1.0])


def test_noise_and_style_use_this_one():
    # one implementation: the noise, calibrated-noise and style stages all call this function
    for module in (noise_apply, calibrated_noise, transfer):
        assert module.match_mean_std is match_mean_std
