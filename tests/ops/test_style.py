"""ops/style: CONTENT styled towards a reference from INIT, files in and out (random VGG-19)."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from faket_dask.errors import InputError
from faket_dask.io import TiltSeries, write_tilt_series
from faket_dask.ops.style import style
from faket_dask.options import StyleOptions

pytestmark = pytest.mark.timeout(300)

ANGLES = np.array([-10.0, 10.0])


def _write(path, data):
    write_tilt_series(path, TiltSeries(data.astype(np.float32), ANGLES, 9.0))
    return path


def test_style_writes_faket_with_the_contents_geometry(tmp_path):
    rng = np.random.default_rng(0)
    content = _write(tmp_path / "content.mrc", rng.normal(size=(2, 32, 32)))
    ref = _write(tmp_path / "style.mrc", rng.normal(size=(2, 32, 32)))
    init_data = rng.normal(size=(2, 32, 32))
    init = _write(tmp_path / "init.mrc", init_data)
    out = tmp_path / "faket.mrc"
    opts = StyleOptions(content, ref, init, out, weights="random", weights_seed=1, device="cpu")
    info = style(opts)
    assert info.name == "random" and info.path is None
    with mrcfile.open(out) as m:
        styled = np.asarray(m.data)
        assert float(m.voxel_size.x) == pytest.approx(9.0)
    assert styled.shape == (2, 32, 32) and np.all(np.isfinite(styled))
    assert not np.allclose(styled, init_data, atol=1e-3)  # one step moved it from INIT
    np.testing.assert_allclose(np.loadtxt(out.with_suffix(".tlt")), ANGLES)


def test_style_refuses_mismatched_inputs_before_loading_a_model(tmp_path):
    rng = np.random.default_rng(0)
    content = _write(tmp_path / "content.mrc", rng.normal(size=(2, 32, 32)))
    ref = _write(tmp_path / "style.mrc", rng.normal(size=(2, 32, 32)))
    init = _write(tmp_path / "init.mrc", rng.normal(size=(2, 16, 16)))
    out = tmp_path / "faket.mrc"
    with pytest.raises(InputError, match="CONTENT and INIT must have the same shape"):
        style(StyleOptions(content, ref, init, out, weights="random", device="cpu"))
    assert not out.exists()
