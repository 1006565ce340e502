import numpy as np
import pytest

from faket_dask.errors import InputError
from faket_dask.io.mrc import read_mrc, read_mrc_header, read_mrc_rows, write_mrc

pytestmark = pytest.mark.timeout(30)


def test_round_trip_with_voxel_size(tmp_path):
    data = np.random.default_rng(0).normal(size=(3, 8, 10)).astype(np.float32)
    write_mrc(tmp_path / "a.mrc", data, voxel_size=7.5)
    back, voxel = read_mrc(tmp_path / "a.mrc")
    np.testing.assert_array_equal(back, data)
    assert voxel == pytest.approx(7.5)


def test_labels_are_stored_exactly(tmp_path):
    labels = np.arange(24, dtype=np.uint32).reshape(2, 3, 4) * 1000
    write_mrc(tmp_path / "l.mrc", labels)
    back, voxel = read_mrc(tmp_path / "l.mrc")
    np.testing.assert_array_equal(back.astype(np.int64), labels.astype(np.int64))
    assert voxel is None


def test_existing_file_is_not_destroyed(tmp_path):
    path = tmp_path / "keep.mrc"
    write_mrc(path, np.ones((2, 4, 4), np.float32))
    with pytest.raises(InputError, match="exists"):
        write_mrc(path, np.zeros((2, 4, 4), np.float32))
    np.testing.assert_array_equal(read_mrc(path)[0], 1)


def test_truncated_and_corrupt_files(tmp_path):
    path = tmp_path / "t.mrc"
    write_mrc(path, np.ones((4, 16, 16), np.float32))
    raw = path.read_bytes()
    (tmp_path / "trunc.mrc").write_bytes(raw[: len(raw) - 100])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_mrc(tmp_path / "trunc.mrc")
    (tmp_path / "junk.mrc").write_bytes(b"not an mrc file at all" * 100)
    with pytest.raises(InputError, match="not a readable MRC"):
        read_mrc(tmp_path / "junk.mrc")


def test_unwritable_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_mrc(tmp_path / "no" / "x.mrc", np.ones((1, 4, 4), np.float32))


def test_header_and_rows_read_without_the_whole_volume(tmp_path):
    data = np.arange(4 * 9 * 5, dtype=np.int16).reshape(4, 9, 5)
    write_mrc(tmp_path / "v.mrc", data, voxel_size=3.0)
    shape, voxel = read_mrc_header(tmp_path / "v.mrc")
    assert shape == (4, 9, 5) and voxel == pytest.approx(3.0)
    rows = read_mrc_rows(tmp_path / "v.mrc", 2, 6)
    assert rows.dtype == np.int16
    np.testing.assert_array_equal(rows, data[:, 2:6])
    write_mrc(tmp_path / "n.mrc", data.astype(np.float32))
    assert read_mrc_header(tmp_path / "n.mrc")[1] is None  # unset voxel size
    with pytest.raises(InputError, match="does not exist"):
        read_mrc_header(tmp_path / "missing.mrc")
    (tmp_path / "bad.mrc").write_bytes(b"not an mrc")
    with pytest.raises(InputError, match="not a readable MRC"):
        read_mrc_header(tmp_path / "bad.mrc")


def test_mrc_outputs_respect_the_umask_and_keep_an_overwritten_mode(tmp_path):
    import os
    import stat

    from faket_dask.io.mrc import write_mrc

    old = os.umask(0o027)
    try:
        write_mrc(tmp_path / "new.mrc", np.zeros((2, 4, 4), np.float32), 10.0)
        assert stat.S_IMODE(os.stat(tmp_path / "new.mrc").st_mode) == 0o640
        os.umask(0o022)
        write_mrc(tmp_path / "b.mrc", np.zeros((2, 4, 4), np.float32), 10.0)
        assert stat.S_IMODE(os.stat(tmp_path / "b.mrc").st_mode) == 0o644
        os.chmod(tmp_path / "b.mrc", 0o604)
        write_mrc(tmp_path / "b.mrc", np.ones((2, 4, 4), np.float32), 10.0, overwrite=True)
        assert stat.S_IMODE(os.stat(tmp_path / "b.mrc").st_mode) == 0o604
    finally:
        os.umask(old)
