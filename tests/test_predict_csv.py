"""The challenge CSV: exact bytes, names untouched, class ids, fallback rows, the zip."""

from __future__ import annotations

import zipfile
from types import SimpleNamespace

import numpy as np

from heads.id_rows import read_id_rows
from heads.predict import (
    class_id,
    prediction_rows,
    prediction_table,
    source_kind,
    write_predictions,
)


def test_class_id_from_folder_names_or_index():
    assert class_id(["0042", "7", "oak"], 0) == "0042"
    assert class_id(["0042", "7", "oak"], 1) == "0007"
    assert class_id(["0042", "7", "oak"], 2) == "0002"  # not numeric: the class index
    assert class_id(["٣"], 0) == "0000"  # non-ASCII digits are not a class number


def test_csv_bytes_exact_and_zip(tmp_path):
    names = ["0001.jpg", "a b é.JPG", "ünïcode 名前.jpeg"]
    logits = np.array([[0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    rows = prediction_rows(names, logits, ["0007", "0042"])
    csv, zpath = write_predictions(rows, tmp_path / "pred_results.csv")
    expected = "0001.jpg, 0042\na b é.JPG, 0007\nünïcode 名前.jpeg, 0042\n"
    assert csv.read_bytes() == expected.encode("utf-8")
    with zipfile.ZipFile(zpath) as zf:
        assert zf.namelist() == ["pred_results.csv"]
        assert zf.read("pred_results.csv") == expected.encode("utf-8")
    assert read_id_rows(csv, what="predictions") == {n: c for n, c in rows}
    # same predictions, same zip bytes (fixed timestamp)
    first = zpath.read_bytes()
    write_predictions(rows, tmp_path / "pred_results.csv")
    assert zpath.read_bytes() == first


def test_unreadable_files_get_fallback_rows_with_warning(caplog):
    model = SimpleNamespace(classes=["0003", "0010"], fallback_class=1)
    logits = np.array([[1.0, 0.0], [0.0, 1.0]])
    with caplog.at_level("WARNING"):
        rows = prediction_table(model, ["b.jpg", "a.jpg"], logits, ["broken.jpg"])
    assert rows == [("a.jpg", "0010"), ("b.jpg", "0003"), ("broken.jpg", "0010")]
    assert "broken.jpg" in caplog.text and "0010" in caplog.text


def test_source_kind(tmp_path):
    (tmp_path / "s.zarr").mkdir()
    (tmp_path / "s.zarr" / "zarr.json").write_text("{}")
    (tmp_path / "sh").mkdir()
    (tmp_path / "sh" / "manifest.json").write_text("{}")
    (tmp_path / "img").mkdir()
    assert source_kind(tmp_path / "s.zarr") == "store"
    assert source_kind(tmp_path / "sh") == "shards"
    assert source_kind(tmp_path / "img") == "images"
