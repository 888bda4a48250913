"""artlens.files: the one atomic-write helper (every file the package, the scripts and the trainers write)."""
import json
import os

import numpy as np
import pytest

from artlens.files import atomic_path, atomic_write, write_bytes, write_json, write_text


def test_writes_replace_the_file_and_leave_nothing_else(tmp_path):
    p = tmp_path / "sub" / "a.json"  # the parent is created
    write_json(p, {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}
    write_text(p, "new ü")
    assert p.read_text(encoding="utf-8") == "new ü"
    write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(f.name for f in tmp_path.rglob("*")) == ["a.json", "b.bin", "sub"]


def test_an_error_keeps_the_old_file_and_removes_the_partial_one(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")
    seen = []
    with pytest.raises(KeyError):
        with atomic_write(p) as f:
            f.write("half a new fi")
            f.flush()
            seen.append(f.name)
            assert os.path.dirname(f.name) == str(tmp_path)  # beside the file: os.replace stays atomic
            assert p.read_text() == "old"  # nothing visible before the block ends
            raise KeyError("writer failed")
    assert p.read_text() == "old"
    assert not os.path.exists(seen[0]) and os.listdir(tmp_path) == ["a.txt"]
    with pytest.raises(TypeError):  # an object json cannot write: the old file stays
        write_json(p, {"x": object()})
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_atomic_path_for_writers_that_take_a_file_name(tmp_path):
    from safetensors.numpy import load_file, save_file

    p = tmp_path / "w.safetensors"
    with atomic_path(p, fsync=True) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".tmp") and not tmp.exists()
        save_file({"x": np.arange(3, dtype=np.float32)}, str(tmp))
    assert load_file(str(p))["x"].tolist() == [0, 1, 2]
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            save_file({"x": np.zeros(2, np.float32)}, str(tmp))
            raise RuntimeError("killed after the write, before the rename")
    assert load_file(str(p))["x"].tolist() == [0, 1, 2] and os.listdir(tmp_path) == ["w.safetensors"]
    with atomic_write(tmp_path / "a.npz", "wb") as f:  # numpy appends .npz to a bare name: give it the file
        np.savez_compressed(f, a=np.ones(2))
    assert np.load(tmp_path / "a.npz")["a"].tolist() == [1, 1]
    with pytest.raises(ValueError, match="'a'"):
        with atomic_write(p, "a"):
            pass
