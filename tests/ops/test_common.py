"""ops/_common: the checks every local verb makes before any work."""

from __future__ import annotations

import numpy as np
import pytest

from faket_dask.errors import InputError
from faket_dask.ops._common import angles_or_own, check_tilt_counts

pytestmark = pytest.mark.timeout(30)


def test_tilt_counts_must_agree_and_the_message_lists_them():
    check_tilt_counts({"a.mrc": 5, "angles": 5})
    with pytest.raises(InputError, match=r"tilt counts differ \(a\.mrc: 5, angles: 4\)"):
        check_tilt_counts({"a.mrc": 5, "angles": 4})


def test_angles_given_win_else_the_inputs_own_validated_else_a_hint():
    given, own = np.array([-10.0, 10.0]), np.array([-20.0, 0.0, 20.0])
    assert angles_or_own(given, own) is given
    np.testing.assert_array_equal(angles_or_own(None, own), own)
    with pytest.raises(InputError, match="strictly increasing"):
        angles_or_own(None, own[::-1])
    with pytest.raises(InputError, match="--angles-file"):
        angles_or_own(None, None)
