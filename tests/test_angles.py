import numpy as np
import pytest

from faket_dask.angles import (
    parse_angles,
    parse_range,
    read_tilt_file,
    validate_angles,
    write_tilt_file,
)
from faket_dask.errors import InputError

pytestmark = pytest.mark.timeout(30)


def test_range_includes_stop():
    angles = parse_range("-60:60:2")
    assert len(angles) == 61
    assert angles[0] == -60 and angles[-1] == 60
    np.testing.assert_allclose(np.diff(angles), 2.0)


def test_range_formula_with_fractional_step():
    angles = parse_range("-1.5:1.5:0.5")
    np.testing.assert_allclose(angles, -1.5 + 0.5 * np.arange(7))


def test_stop_off_grid_is_an_error():
    with pytest.raises(InputError, match="STOP"):
        parse_range("-60:61:2")


@pytest.mark.parametrize("spec", ["-60:60", "a:b:c", "60:-60:2", "0:10:0"])
def test_malformed_ranges(spec):
    with pytest.raises(InputError):
        parse_range(spec)


def test_list_and_file_round_trip(tmp_path):
    path = tmp_path / "series.tlt"
    write_tilt_file(path, [-30.0, -0.5, 12.25])
    np.testing.assert_allclose(read_tilt_file(path), [-30.0, -0.5, 12.25])
    np.testing.assert_allclose(parse_angles(str(path)), [-30.0, -0.5, 12.25])
    np.testing.assert_allclose(parse_angles("-3, 0, 3"), [-3, 0, 3])
    np.testing.assert_allclose(parse_angles([1, 2]), [1, 2])


@pytest.mark.parametrize(
    ("angles", "match"),
    [([0, 0], "increasing"), ([10, 5], "increasing"), ([-91, 0], "90"), ([], "no tilt")],
)
def test_validation(angles, match):
    with pytest.raises(InputError, match=match):
        validate_angles(np.asarray(angles, dtype=float))


def test_bad_tilt_file(tmp_path):
    path = tmp_path / "bad.rawtlt"
    path.write_text("1.0\nabc\n")
    with pytest.raises(InputError, match=r"bad.rawtlt:2"):
        read_tilt_file(path)
    with pytest.raises(InputError, match="does not exist"):
        read_tilt_file(tmp_path / "missing.tlt")
