import numpy as np
import pytest
import xarray as xr

from faket_dask.angles import write_tilt_file
from faket_dask.errors import InputError
from faket_dask.io import (
    TiltSeries,
    Volume,
    read_tilt_series,
    read_volume,
    write_mrc,
    write_tilt_series,
    write_volume,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def series():
    rng = np.random.default_rng(1)
    return TiltSeries(
        rng.normal(size=(3, 12, 16)).astype(np.float32), np.array([-20.0, 0, 20]), 6.0
    )


@pytest.mark.parametrize("name", ["s.mrc", "s.st", "s.ali", "s.mrcs", "s.zarr"])
def test_tilt_series_round_trip(tmp_path, series, name):
    write_tilt_series(tmp_path / name, series)
    back = read_tilt_series(tmp_path / name)
    np.testing.assert_array_equal(back.data, series.data)
    np.testing.assert_allclose(back.angles_deg, series.angles_deg)
    assert back.pixel_spacing == pytest.approx(6.0)


def test_zarr_series_is_xarray_readable(tmp_path, series):
    write_tilt_series(tmp_path / "s.zarr", series, var="noisy")
    ds = xr.open_zarr(tmp_path / "s.zarr")
    assert ds["noisy"].dims == ("tilt", "y", "x")
    np.testing.assert_allclose(ds["tilt_angle"].values, series.angles_deg)
    assert ds.attrs["pixel_spacing"] == 6.0


def test_zarr_series_reads_without_dask(tmp_path, series):
    # the pipeline reads style references inside Dask workers: the read must never reach a
    # Dask scheduler (here one that fails every graph it is given)
    import dask

    def refuse(*args, **kwargs):
        raise AssertionError("read_tilt_series went through Dask")

    write_tilt_series(tmp_path / "s.zarr", series)
    with dask.config.set(scheduler=refuse):
        back = read_tilt_series(tmp_path / "s.zarr")
    np.testing.assert_array_equal(back.data, series.data)
    np.testing.assert_allclose(back.angles_deg, series.angles_deg)


def test_rawtlt_is_used_when_no_tlt(tmp_path, series):
    write_mrc(tmp_path / "r.mrc", series.data, 6.0)
    write_tilt_file(tmp_path / "r.rawtlt", [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(read_tilt_series(tmp_path / "r.mrc").angles_deg, [-1, 0, 1])


def test_angle_count_mismatch(tmp_path, series):
    write_mrc(tmp_path / "m.mrc", series.data)
    write_tilt_file(tmp_path / "m.tlt", [0.0, 1.0])
    with pytest.raises(InputError, match="3 tilts but its angle file lists 2"):
        read_tilt_series(tmp_path / "m.mrc")


def test_two_d_input_and_unknown_extension(tmp_path):
    write_mrc(tmp_path / "img.mrc", np.ones((8, 8), np.float32))
    with pytest.raises(InputError, match="must be 3-D"):
        read_tilt_series(tmp_path / "img.mrc")
    with pytest.raises(InputError, match="unknown extension"):
        read_tilt_series(tmp_path / "img.tif")


def test_volume_round_trip(tmp_path):
    vol = Volume(np.arange(60, dtype=np.float32).reshape(3, 4, 5), 8.0)
    for name in ("v.mrc", "v.zarr"):
        write_volume(tmp_path / name, vol)
        back = read_volume(tmp_path / name)
        np.testing.assert_array_equal(back.data, vol.data)
        assert back.pixel_spacing == pytest.approx(8.0)


def test_standalone_zarr_outputs_carry_ome_metadata(tmp_path, series):
    import json

    from faket_dask.io.ome import validate_ome

    write_tilt_series(tmp_path / "t.zarr", series)
    attrs = json.loads((tmp_path / "t.zarr" / "zarr.json").read_text())["attributes"]
    assert validate_ome(attrs) == []
    (image,) = attrs["ome"]["multiscales"]
    assert [a["name"] for a in image["axes"]] == ["tilt", "y", "x"]
    (level,) = image["datasets"]
    assert level["path"] == "tilts"
    assert level["coordinateTransformations"][0]["scale"] == [1.0, 6.0, 6.0]
    write_volume(tmp_path / "v.zarr", Volume(np.ones((4, 5, 6), np.float32), 2.5))
    attrs = json.loads((tmp_path / "v.zarr" / "zarr.json").read_text())["attributes"]
    assert validate_ome(attrs) == []
    assert attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0][
        "scale"
    ] == [2.5, 2.5, 2.5]
    # without a pixel spacing there is no physical scale to state
    write_volume(tmp_path / "n.zarr", Volume(np.ones((4, 5, 6), np.float32), None))
    attrs = json.loads((tmp_path / "n.zarr" / "zarr.json").read_text())["attributes"]
    assert "ome" not in attrs


def test_mrc_space_group_stack_vs_volume(tmp_path, series):
    """A tilt-series is an image stack (space group 0, mz 1); a volume is space group 1."""
    import mrcfile

    write_tilt_series(tmp_path / "s.mrc", series)
    write_volume(tmp_path / "v.mrc", Volume(series.data, 6.0))
    with mrcfile.open(tmp_path / "s.mrc") as mrc:
        assert int(mrc.header.ispg) == 0 and int(mrc.header.mz) == 1
        assert mrc.is_image_stack() and mrc.voxel_size.x == pytest.approx(6.0)
    with mrcfile.open(tmp_path / "v.mrc") as mrc:
        assert int(mrc.header.ispg) == 1 and int(mrc.header.mz) == series.data.shape[0]
        assert mrc.is_volume()
    np.testing.assert_array_equal(read_tilt_series(tmp_path / "s.mrc").data, series.data)
