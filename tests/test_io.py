"""equihash.io.atomic_path: all or nothing, and an artifact's permissions are a plain file's."""

import os

import pytest

from equihash.io import atomic_path


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_committed_file_and_folder_get_the_modes_of_open_and_mkdir(tmp_path):
    with atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("x")
    with atomic_path(tmp_path / "d", directory=True) as tmp:
        (tmp / "f").write_text("y")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask()
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~umask()


def test_a_failed_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
