"""`engine.jsonfile`: one atomic JSON writer for manifests, run files and reports."""

import json

import pytest

from engine.jsonfile import read_json, write_json


def test_round_trip_keeps_non_ascii_text_as_is(tmp_path):
    obj = {"classes": ["Ästhetik", "蒲公英"], "n": 3}
    path = tmp_path / "sub" / "manifest.json"  # missing parents are created
    write_json(path, obj)
    assert read_json(path) == obj
    assert "蒲公英" in path.read_text(encoding="utf-8")  # not \\u-escaped
    assert not path.with_name("manifest.json.tmp").exists()


def test_same_object_same_bytes_whatever_the_key_order(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    write_json(tmp_path / "b.json", {"a": [1, 2], "b": 1})
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "config.json"
    write_json(path, {"ok": True})
    with pytest.raises(TypeError):
        write_json(path, {"bad": Unserialisable()})
    assert json.loads(path.read_text()) == {"ok": True}
    assert list(tmp_path.iterdir()) == [path]  # the temp file is gone too


class Unserialisable:
    def __str__(self):
        raise TypeError("cannot be written")
