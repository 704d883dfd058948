"""`engine shard` on the command line."""

from __future__ import annotations

import json

from click.testing import CliRunner

from engine.cli import main
from shards.sample_data import make_sample_dataset


def test_help_lists_the_options():
    result = CliRunner().invoke(main, ["shard", "--help"])
    assert result.exit_code == 0
    for option in ("--out", "--short-side", "--workers", "--shard-size", "--labeled", "--force"):
        assert option in result.output


def test_missing_and_empty_folders_are_one_line_errors(tmp_path):
    result = CliRunner().invoke(main, ["shard", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "source folder not found" in result.output
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["shard", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "no files found" in result.output


def test_default_output_folder_and_summary_names_bad_files(tmp_path, monkeypatch):
    info = make_sample_dataset(
        tmp_path / "data", n_classes=3, max_per_class=4, min_per_class=2, n_test=3
    )
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["shard", str(info.train_dir), "--workers", "1"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "work/shards/train/manifest.json").read_text())
    assert result.stdout.startswith(f"{manifest['num_samples']} images in 1 shards")
    for entry in manifest["repaired"] + manifest["rejected"]:
        assert entry["path"] in result.output
    assert manifest["params"]["short_side"] == 512
    result = CliRunner().invoke(
        main, ["shard", str(info.test_dir), "--short-side", "0", "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "work/shards/test/manifest.json").read_text())
    assert manifest["labeled"] is False and manifest["params"]["short_side"] is None
