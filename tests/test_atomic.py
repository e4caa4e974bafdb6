import os

import pytest

from pixlab._atomic import atomic_dir, atomic_path, atomic_write


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a.txt"
    with atomic_write(p, "w") as f:
        f.write("one")
    with atomic_write(p, "w") as f:
        f.write("two")
    assert p.read_text() == "two"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_exception_mid_write_keeps_previous_version(tmp_path):
    p = tmp_path / "labels.png"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as f:
            f.write(b"half")
            raise RuntimeError("disk full")
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["labels.png"]


def test_atomic_path_keeps_suffix_and_cleans_up(tmp_path):
    p = tmp_path / "x.tif"
    with pytest.raises(ValueError):
        with atomic_path(p) as tmp:
            assert tmp.endswith(".tif")
            open(tmp, "wb").write(b"partial")
            raise ValueError("boom")
    assert not p.exists() and os.listdir(tmp_path) == []


def test_atomic_dir_replaces_folder_whole(tmp_path):
    d = tmp_path / "bundle"
    with atomic_dir(d) as t:
        (t / "a").write_text("1")
    with pytest.raises(KeyError):
        with atomic_dir(d) as t:
            (t / "b").write_text("2")
            raise KeyError("x")
    assert sorted(os.listdir(d)) == ["a"]
    with atomic_dir(d) as t:
        (t / "b").write_text("2")
    assert sorted(os.listdir(d)) == ["b"]
    assert sorted(os.listdir(tmp_path)) == ["bundle"]


def test_missing_output_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic_write(tmp_path / "nope" / "f.txt", "w") as f:
            f.write("x")
