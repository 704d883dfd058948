"""Inputs a new user meets off the happy path (issue 14): hidden image files (item 11), the
shard progress bar (item 12), label files naming classes by folder (item 7)."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner
from clip_helpers import write_images
from test_os_errors import assert_one_error_line

from engine.cli import main
from shards.config import ShardConfig
from shards.reader import iter_samples
from shards.sources import list_sources
from shards.writer import pack


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_hidden_image_file_is_an_image_other_hidden_files_are_skipped(tmp_path):
    test = tmp_path / "test"
    write_images(test, 2)  # img_0.jpg, img_1.jpg
    shutil.copy(test / "img_0.jpg", test / ".hidden.jpg")
    (test / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (test / "._img_1.jpg").write_bytes(b"\0\5\26\7AppleDouble")  # macOS metadata, not a JPEG
    (test / ".ipynb_checkpoints").mkdir()
    shutil.copy(test / "img_1.jpg", test / ".ipynb_checkpoints" / "img_1.jpg")

    listing = list_sources(test)
    assert [f.relpath for f in listing.files] == [".hidden.jpg", "img_0.jpg", "img_1.jpg"]
    assert [s["path"] for s in listing.skipped] == [
        ".DS_Store",
        "._img_1.jpg",
        ".ipynb_checkpoints/img_1.jpg",
    ]
    manifest = pack(test, tmp_path / "shards", ShardConfig(workers=1))
    samples = {s.meta["path"]: s for s in iter_samples(tmp_path / "shards")}
    # packed byte for byte like its visible twin, so `engine predict` gives it a real row
    assert samples[".hidden.jpg"].jpeg == (test / ".hidden.jpg").read_bytes()
    assert ".hidden.jpg" not in {r["path"] for r in manifest["rejected"]}


def test_shard_shows_a_progress_bar_on_stderr(tmp_path):
    write_images(tmp_path / "images", {"0000": 3, "0001": 2})
    result = invoke("shard", tmp_path / "images", "--out", tmp_path / "shards", "--workers", 1)
    assert result.exit_code == 0, result.output
    assert "shard: 100%" in result.stderr and "5/5" in result.stderr
    assert "shard:" not in result.stdout  # stdout stays the summary alone


def _eval_files(tmp_path, labels: list[str]):
    """Predictions as `engine predict` writes them for folders rose/tulip (ids 0000/0001)."""
    pred = tmp_path / "pred.csv"
    pred.write_text("a.jpg, 0000\nb.jpg, 0001\nc.jpg, 0001\n")
    truth = tmp_path / "labels.csv"
    truth.write_text("".join(f"{n}.jpg, {c}\n" for n, c in zip("abc", labels, strict=True)))
    manifest = tmp_path / "manifest.json"
    classes = ["rose", "tulip"]
    manifest.write_text(json.dumps({"classes": classes, "class_counts": {"rose": 5, "tulip": 2}}))
    return pred, truth, manifest


def test_eval_maps_folder_names_through_the_manifest(tmp_path):
    pred, truth, manifest = _eval_files(tmp_path, ["rose", "tulip", "rose"])
    result = invoke("eval", pred, truth, "--train-counts", manifest)
    assert result.exit_code == 0, result.output
    assert "top-1             0.6667" in result.output  # c.jpg is wrong, the others right
    assert "balanced accuracy 0.7500" in result.output  # rose 1/2, tulip 1/1


def test_eval_numbers_are_ids_at_any_width(tmp_path):
    pred, truth, _ = _eval_files(tmp_path, ["0", "1", "0001"])
    result = invoke("eval", pred, truth)
    assert result.exit_code == 0, result.output
    assert "top-1             1.0000" in result.output


def test_eval_refuses_folder_names_it_cannot_map(tmp_path):
    pred, truth, manifest = _eval_files(tmp_path, ["rose", "tulip", "rose"])
    result = invoke("eval", pred, truth)  # no class list: would score 0.0000
    assert_one_error_line(result, "'rose'", "4-digit class id", "--train-counts")
    pred, truth, manifest = _eval_files(tmp_path, ["rose", "daisy", "rose"])
    result = invoke("eval", pred, truth, "--train-counts", manifest)
    assert_one_error_line(result, "'daisy'", "2 class folders", "rose, tulip")
