"""io/textfile: a small text file, or one clear line naming it."""

from __future__ import annotations

import pytest

from faket_dask.errors import InputError
from faket_dask.io.textfile import read_text_file

pytestmark = pytest.mark.timeout(30)


def test_text_or_one_line_naming_the_file(tmp_path):
    good = tmp_path / "m.json"
    good.write_text("{\"snr\": 0.5}\n", encoding="utf-8")
    assert read_text_file(good, "noise model file") == "{\"snr\": 0.5}\n"
    with pytest.raises(InputError, match=r"^noise model file .*missing\.json does not exist$"):
        read_text_file(tmp_path / "missing.json", "noise model file")
    (tmp_path / "latin1.json").write_bytes(b"\xe9t\xe9")
    with pytest.raises(InputError, match=r"^cannot read calibration file .*latin1\.json: "):
        read_text_file(tmp_path / "latin1.json", "calibration file")
    with pytest.raises(InputError, match=r"^cannot read calibration file "):
        read_text_file(tmp_path, "calibration file")  # a directory
