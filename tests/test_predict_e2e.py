"""End to end with the real packages: images -> shards -> features -> train k=2 -> predict.

Random ViT-B/32 weights (no download); a handful of images so it stays CPU-sized.
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from engine.cli import main
from features.config import FeatureConfig
from features.extract import extract
from shards.config import ShardConfig
from shards.sample_data import make_sample_dataset
from shards.writer import pack


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.slow
def test_images_to_predictions_agree_with_store(tmp_path):
    ds = make_sample_dataset(
        tmp_path / "data",
        n_classes=3,
        max_per_class=4,
        min_per_class=2,
        n_test=6,
        size_range=(64, 96),
        odd_files=True,
    )
    train_shards, test_shards = tmp_path / "shards" / "train", tmp_path / "shards" / "test"
    pack(ds.train_dir, train_shards, ShardConfig(workers=1))
    test_manifest = pack(ds.test_dir, test_shards, ShardConfig(workers=1))
    store = tmp_path / "train.zarr"
    result = _invoke(
        "train",
        "--features",
        store,
        "--shards",
        train_shards,
        "--unfreeze-last",
        2,
        "--rounds",
        0,
        "--weights",
        "random",
        "--runs",
        tmp_path / "runs",
        "--out",
        tmp_path / "runs" / "r",
    )
    assert result.exit_code == 0, result.output
    test_store = extract(
        test_shards, tmp_path / "test.zarr", FeatureConfig(depth=2, weights="random", backend="pil")
    )
    csv_img = tmp_path / "img.csv"
    csv_store = tmp_path / "store.csv"
    model = tmp_path / "runs" / "r"
    assert (
        _invoke(
            "predict", ds.test_dir, "--model", model, "--out", csv_img, "--backend", "pil"
        ).exit_code
        == 0
    )
    assert _invoke("predict", test_store, "--model", model, "--out", csv_store).exit_code == 0
    rows_img = dict(line.rsplit(", ", 1) for line in csv_img.read_text("utf-8").splitlines())
    rows_store = dict(line.rsplit(", ", 1) for line in csv_store.read_text("utf-8").splitlines())
    # every test file has a row (broken ones too); readable ones agree image vs store
    assert sorted(rows_img) == sorted(p.name for p in ds.test_dir.iterdir())
    for name, cid in rows_store.items():
        assert rows_img[name] == cid
    # the store lacks the unreadable files, its shards' manifest names them: the same rows
    rejected = {r["path"] for r in test_manifest["rejected"]}
    assert rejected and sorted(rows_store) == sorted(rows_img)
    assert {rows_store[name] for name in rejected} == {rows_img[name] for name in rejected}
    assert np.all([len(c) == 4 and c.isdigit() for c in rows_img.values()])
