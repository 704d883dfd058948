"""`engine.atomic`: the one temp-file + fsync + rename + folder-fsync writer (issue 19 item 6)."""

from __future__ import annotations

import errno
import os
import stat

import pytest

import engine.atomic
from engine.atomic import atomic_path, write_atomic


def _fsync_kinds(monkeypatch) -> list[str]:
    """Record, per os.fsync call, whether it flushed a regular file or a folder."""
    calls: list[str] = []
    real = os.fsync

    def counting(fd):
        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        return real(fd)

    monkeypatch.setattr(engine.atomic.os, "fsync", counting)
    return calls


def test_write_fsyncs_the_file_then_its_folder(tmp_path, monkeypatch):
    calls = _fsync_kinds(monkeypatch)
    path = write_atomic(tmp_path / "model.pt", b"weights")
    assert path.read_bytes() == b"weights"
    assert calls == ["file", "dir"]
    assert os.listdir(tmp_path) == ["model.pt"]


def test_text_and_callback_writers(tmp_path):
    write_atomic(tmp_path / "a.csv", "x.jpg, 0042\n")
    write_atomic(tmp_path / "b.bin", lambda f: f.write(b"\x00\x01"))
    assert (tmp_path / "a.csv").read_text(encoding="utf-8") == "x.jpg, 0042\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_full_disk_leaves_no_temp_and_the_old_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"old model")

    def half_then_full(f):
        f.write(b"half a new model")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    with pytest.raises(OSError) as info:
        write_atomic(path, half_then_full)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"old model"
    assert os.listdir(tmp_path) == ["model.pt"]  # no model.tmp, no hidden temp


def test_interrupt_inside_atomic_path_removes_the_temp(tmp_path):
    path = tmp_path / "chunk"
    with pytest.raises(KeyboardInterrupt), atomic_path(path, suffix=".partial") as tmp:
        tmp.write_bytes(b"part")
        assert tmp.parent == tmp_path and tmp.name.endswith(".partial")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_two_writers_get_different_temp_files(tmp_path):
    with atomic_path(tmp_path / "x") as a, atomic_path(tmp_path / "x") as b:
        assert a != b
        a.write_bytes(b"a")
        b.write_bytes(b"b")
    assert (tmp_path / "x").read_bytes() == b"a"  # the outer writer renamed last
    assert os.listdir(tmp_path) == ["x"]
