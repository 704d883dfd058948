"""`engine train` / `engine predict` through the CLI: run folder, --config re-run, user errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from heads_helpers import write_store

from engine.cli import main
from features.store import FeatureStore

CLASSES = ["0003", "0010", "0042"]


def _store(tmp_path, depth=0):
    rng = np.random.default_rng(0)
    n = 30
    labels = np.arange(n) % 3
    means = rng.standard_normal((3, 512))
    x = means[labels] + 0.3 * rng.standard_normal((n, 512))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    tokens = rng.standard_normal((1, n, 50, 768)).astype(np.float16) if depth else None
    data = FeatureStore.from_arrays(
        embed=x.astype(np.float16),
        labels=labels,
        classes=CLASSES,
        tokens=tokens,
        depth=depth,
        keys=[f"k{i}" for i in range(n)],
        paths=[f"test img {i:02d}.jpg" for i in range(n)],
    )
    return write_store(tmp_path / "train.zarr", data), data


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("name", ["train", "predict", "eval"])
def test_help(name):
    result = _invoke(name, "--help")
    assert result.exit_code == 0 and "Usage" in result.output


def test_missing_store_and_shards_is_a_user_error(tmp_path):
    result = _invoke(
        "train", "--features", tmp_path / "none.zarr", "--shards", tmp_path / "no", "--rounds", 0
    )
    assert result.exit_code == 1
    assert "does not exist and there are no shards" in result.output


def test_unfreeze_last_deeper_than_store_is_a_user_error(tmp_path):
    store, _ = _store(tmp_path)
    result = _invoke(
        "train", "--features", store, "--unfreeze-last", 2, "--rounds", 0, "--out", tmp_path / "r"
    )
    assert result.exit_code == 1
    assert "rebuild features with `engine features SHARDS --unfreeze-last 2" in result.output


def test_bad_loss_and_unknown_config_key(tmp_path):
    store, _ = _store(tmp_path)
    result = _invoke("train", "--features", store, "--loss", "focal", "--rounds", 0)
    assert result.exit_code == 1 and "choose one of ['ce', 'gce', 'sce']" in result.output
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"train": {"epochz": 1}}))
    result = _invoke("train", "--features", store, "--config", cfg, "--rounds", 0)
    assert result.exit_code == 1
    assert "unknown key(s) epochz in config section 'config.train'; valid: " in result.output
    assert not (tmp_path / "runs").exists()


def test_train_rerun_predict_eval(tmp_path):
    store, data = _store(tmp_path)
    runs = tmp_path / "runs"
    result = _invoke(
        "train",
        "--features",
        store,
        "--rounds",
        0,
        "--seed",
        7,
        "--weights",
        "random",
        "--runs",
        runs,
        "--out",
        runs / "first",
    )
    assert result.exit_code == 0, result.output
    first = runs / "first"
    config = json.loads((first / "config.json").read_text())
    assert config["train"]["seed"] == 7 and config["rounds"] == 0
    lines = (first / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == list(range(config["train"]["epochs_lp"]))
    assert (runs / "latest").resolve() == first.resolve()

    result = _invoke(
        "train", "--config", first / "config.json", "--runs", runs, "--out", runs / "again"
    )
    assert result.exit_code == 0, result.output
    a = torch.load(first / "model.pt", weights_only=False)
    b = torch.load(runs / "again" / "model.pt", weights_only=False)
    for key, value in a["head"]["state_dict"].items():
        assert torch.equal(value, b["head"]["state_dict"][key])
    assert a["config"] == b["config"]

    out = tmp_path / "pred_results.csv"
    result = _invoke("predict", store, "--model", runs / "latest", "--out", out)
    assert result.exit_code == 0, result.output
    rows = out.read_text(encoding="utf-8").splitlines()
    assert len(rows) == 30 and rows[0].startswith("test img 00.jpg, ")
    assert {r.split(", ")[1] for r in rows} <= {"0003", "0010", "0042"}
    assert (tmp_path / "pred_results.zip").exists()
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "".join(f"{p}, {CLASSES[y]}\n" for p, y in zip(data.paths, data.labels, strict=True))
    )
    result = _invoke("eval", out, labels)
    assert result.exit_code == 0 and "top-1             1.0000" in result.output


@pytest.mark.slow  # ~40 s on 2 cores: screening builds its own probes
def test_train_with_screening_rounds(tmp_path):
    store, _ = _store(tmp_path)
    run = tmp_path / "runs" / "screened"
    result = _invoke(
        "train", "--features", store, "--rounds", 1, "--runs", tmp_path / "runs", "--out", run
    )
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["rounds"] == 1 and "knn_k" in config["screen"]
    assert (run / "rounds").is_dir() and any((run / "rounds").iterdir())
    assert f"suspects page: {run / 'rounds' / 'suspects.html'}" in result.output
    assert (run / "rounds" / "suspects.csv").is_file() and (run / "rounds" / "scores.npz").is_file()
    assert (run / "model.pt").exists()
    # issue 14.1: re-running a screened run's config.json crashed (probe saved as a repr)
    again = tmp_path / "runs" / "again"
    result = _invoke("train", "--config", run / "config.json", "--out", again)
    assert result.exit_code == 0, result.output
    assert (again / "config.json").read_text() == (run / "config.json").read_text()
    a = torch.load(run / "model.pt", weights_only=False)["head"]["state_dict"]
    b = torch.load(again / "model.pt", weights_only=False)["head"]["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
