"""`engine features`: help, errors as one line, and a run end to end (tiny model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from clip_helpers import write_images

import features.model
from bench.tiny_clip import TINY_MODEL, tiny_clip
from engine.cli import main
from engine.paths import store_for as default_store
from features.store import open_store
from shards.config import ShardConfig
from shards.writer import pack


def test_help_lists_the_options():
    result = CliRunner().invoke(main, ["features", "--help"])
    assert result.exit_code == 0
    for option in ("--unfreeze-last", "--views", "--out", "--weights", "--batch-size",
                   "--backend", "--force", "dali-gpu"):  # fmt: skip
        assert option in result.output


def test_default_store_is_named_after_the_split():
    assert default_store(Path("work/shards/train")) == Path("work/features/train.zarr")
    assert default_store(Path("/x/shards/test/")) == Path("work/features/test.zarr")


def test_missing_shards_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["features", str(tmp_path / "nope"), "--weights", "random"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert str(tmp_path / "nope") in result.output and "engine shard" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--unfreeze-last", "13"], "13 is not in the range 0<=x<=12"),
        (["--views", "0"], "0 is not in the range x>=1"),
        (["--backend", "gpu"], "'gpu' is not one of"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path, args, message):
    result = CliRunner().invoke(main, ["features", str(tmp_path), *args])
    assert result.exit_code == 1 and message in result.output  # usage errors: one line, exit 1


def test_features_end_to_end(tmp_path, monkeypatch):
    write_images(tmp_path / "src", {"a": 3, "b": 2})
    pack(tmp_path / "src", tmp_path / "shards", ShardConfig(shard_size=4, workers=1))
    monkeypatch.setattr(features.model, "load_clip", tiny_clip)  # seconds, not minutes
    out = tmp_path / "train.zarr"
    args = ["features", str(tmp_path / "shards"), "--out", str(out), "--unfreeze-last", "1",
            "--views", "2", "--weights", "random", "--backend", "pil", "--workers", "0"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"feature store -> {out} (depth 1, 2 view(s), weights random)" in result.output
    store = open_store(out, model=TINY_MODEL)
    assert store.depth == 1 and store.views == 2 and store.labels.tolist() == [0, 0, 0, 1, 1]
    assert np.isfinite(store.tokens[1].astype(np.float32)).all()
    again = CliRunner().invoke(main, [*args, "--views", "1"])  # the last --views wins
    assert again.exit_code == 1 and "--force" in again.output
