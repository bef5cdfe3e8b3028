"""rank_grpo_plugin.files: the one atomic writer (standard library only)."""
from __future__ import annotations

import os

import pytest

from rank_grpo_plugin.files import atomic_paths, write_atomic


def test_write_atomic_text_and_bytes_creates_parents_and_leaves_no_temp(tmp_path):
    write_atomic(tmp_path / "a" / "b.txt", "héllo\n")
    write_atomic(str(tmp_path / "c.bin"), b"\x00\x01")
    assert (tmp_path / "a" / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    write_atomic(tmp_path / "c.bin", b"new")
    assert (tmp_path / "c.bin").read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["a", "c.bin"] and os.listdir(tmp_path / "a") == ["b.txt"]


def test_a_failed_block_replaces_nothing_and_removes_its_temps(tmp_path):
    (tmp_path / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_paths(tmp_path / "keep.txt", tmp_path / "dir", tmp_path / "x.npy", suffix=".npy") as tmps:
            assert all(t.endswith(".npy") and os.path.dirname(t) == str(tmp_path) for t in tmps)
            open(tmps[0], "w").write("new")
            os.mkdir(tmps[1])
            open(os.path.join(tmps[1], "f"), "w").write("x")
            raise RuntimeError("writer failed")
    assert (tmp_path / "keep.txt").read_text() == "old"
    assert os.listdir(tmp_path) == ["keep.txt"]


def test_a_directory_replaces_an_existing_one_only_when_the_block_succeeds(tmp_path):
    old = tmp_path / "model"
    old.mkdir()
    (old / "stale").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_paths(old) as (tmp,):
            os.mkdir(tmp)
            open(os.path.join(tmp, "weights"), "w").write("new")
            raise RuntimeError("writer failed")
    assert os.listdir(old) == ["stale"] and os.listdir(tmp_path) == ["model"]
    with atomic_paths(old) as (tmp,):
        os.mkdir(tmp)
        open(os.path.join(tmp, "weights"), "w").write("new")
        assert os.listdir(old) == ["stale"]  # the old directory stays whole until the block ends
    assert os.listdir(old) == ["weights"] and os.listdir(tmp_path) == ["model"]


def test_several_targets_and_a_directory_are_renamed_into_place(tmp_path):
    with atomic_paths(tmp_path / "one.json", tmp_path / "model") as (one, model):
        open(one, "w").write("{}")
        os.mkdir(model)
        open(os.path.join(model, "weights"), "w").write("w")
        assert os.listdir(tmp_path) != ["model", "one.json"]  # nothing in place before the block ends
    assert sorted(os.listdir(tmp_path)) == ["model", "one.json"]
    assert (tmp_path / "model" / "weights").read_text() == "w"


def test_a_failed_rename_puts_the_old_directory_back(tmp_path, monkeypatch):
    """A directory target is renamed aside before the new one is renamed onto its name; when that second rename
    fails (another file system, a full disk), the old directory is renamed back whole and the temporary removed."""
    old = tmp_path / "model"
    old.mkdir()
    (old / "weights").write_text("old")
    real_replace = os.replace

    def failing_replace(src, dst):
        if os.path.basename(src).startswith(".model.tmp") and not src.endswith(".old"):  # the new directory's rename
            raise OSError(18, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="cross-device"):
        with atomic_paths(old) as (tmp,):
            os.mkdir(tmp)
            open(os.path.join(tmp, "weights"), "w").write("new")
    assert os.listdir(tmp_path) == ["model"] and (old / "weights").read_text() == "old"
