"""Fault injection: `engine train` and `engine predict` killed with SIGKILL in each phase, then
run again, give the same bytes as a run never interrupted (issue 14).

Each run is a real process (`python -m engine ...`) started in its own folder with the same
relative paths, so the files it writes can be compared byte for byte. `engine.faults` makes
the kill land at a known boundary: `ENGINE_FAULT_AT=<point>[:n]` SIGKILLs the process the
n-th time it reaches `<point>`. One kill-and-resume of `engine train` runs in the fast
suite; the other phases are `slow` (each costs two processes that build a random ViT-B/32).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from clip_helpers import write_images

from engine.faults import ENV
from shards.config import ShardConfig
from shards.writer import pack

ROOT = Path(__file__).resolve().parents[1]
# Tiny but complete: features at depth 1, one screening round, LP and FT epochs of 2 steps.
CONFIG = {
    "train": {"epochs_lp": 2, "epochs_ft": 2, "batch_size": 16, "unfreeze_last": 1},
    "screen": {"knn_k": 5, "folds": 2},
}
TRAIN = [
    "train", "--shards", "shards", "--features", "train.zarr", "--weights", "random",
    "--rounds", "1", "--config", "config.json", "--runs", "runs", "--out", "runs/run",
]  # fmt: skip
PREDICT = ["predict", "test", "--model", "runs/run", "--out", "pred.csv", "--backend", "pil"]
TIMEOUT = 600


def engine(folder: Path, args: list[str], fault: str | None = None):
    """Run `engine ARGS` in `folder`; with `fault`, expect it to be SIGKILLed there."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop(ENV, None)
    if fault:
        env[ENV] = fault
    proc = subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if fault:
        assert proc.returncode == -signal.SIGKILL, (fault, proc.returncode, proc.stderr[-3000:])
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def outputs(folder: Path) -> dict[str, str]:
    """Hashes of what a run must re-make exactly: the model, screening rounds, the config;
    and the screening summary without its timings."""
    run = folder / "runs" / "run"
    rounds = sorted(p for p in (run / "rounds").rglob("*") if p.is_file())
    files = [run / "model.pt", run / "config.json", *rounds]
    found = {str(p.relative_to(folder)): sha256(p) for p in files if p.name != "summary.json"}
    summary = json.loads((run / "rounds" / "summary.json").read_text())
    found["summary"] = json.dumps(_without_seconds(summary), sort_keys=True)
    return found


def _without_seconds(value):
    if isinstance(value, dict):
        return {k: _without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_without_seconds(v) for v in value]
    return value


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Train images packed into shards, test images, the config: copied into every run folder."""
    root = tmp_path_factory.mktemp("fault-inputs")
    write_images(root / "images", {"0000": 8, "0001": 8, "0002": 8}, seed=1)
    write_images(root / "test", 6, seed=2)
    pack(root / "images", root / "shards", ShardConfig(workers=1, shard_size=8))
    (root / "config.json").write_text(json.dumps(CONFIG))
    return root


def fresh(inputs: Path, folder: Path) -> Path:
    folder.mkdir()
    for name in ("shards", "test"):
        shutil.copytree(inputs / name, folder / name)
    shutil.copy(inputs / "config.json", folder / "config.json")
    return folder


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> dict:
    """An uninterrupted train + predict: what every killed and resumed run must give."""
    folder = fresh(inputs, tmp_path_factory.mktemp("reference") / "run")
    engine(folder, TRAIN)
    engine(folder, PREDICT)
    return {"folder": folder, "outputs": outputs(folder), "pred": (folder / "pred.csv").read_text()}


def kill_and_resume(inputs, reference, tmp_path, fault: str) -> Path:
    folder = fresh(inputs, tmp_path / "run")
    engine(folder, TRAIN, fault=fault)
    assert not (folder / "runs" / "run" / "model.pt").exists()  # it died before the end
    engine(folder, TRAIN)
    assert outputs(folder) == reference["outputs"]
    lines = (folder / "runs" / "run" / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line)["epoch"] for line in lines]
    assert epochs == list(range(4)), epochs  # every epoch logged once, none lost or repeated
    return folder


def test_train_killed_in_fine_tuning_resumes_to_the_same_model(inputs, reference, tmp_path):
    # ft-epoch:1: after the first FT epoch of the final fit (only that fit checkpoints), so
    # the resume restores head, tail and the FT optimizer from last.pt.
    folder = kill_and_resume(inputs, reference, tmp_path, "ft-epoch:1")
    engine(folder, PREDICT)
    assert (folder / "pred.csv").read_text() == reference["pred"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault",
    [
        "features-batch:1",  # the feature pass, after its first batch: the store resumes
        "screen-round:1",  # after screening round 0 was saved: screening runs again
        "lp-epoch:1",  # after the first linear-probe epoch of the final fit
    ],
)
def test_train_killed_in_each_phase_resumes_to_the_same_model(fault, inputs, reference, tmp_path):
    kill_and_resume(inputs, reference, tmp_path, fault)


@pytest.mark.slow
def test_predict_killed_mid_inference_gives_the_same_predictions(inputs, reference, tmp_path):
    folder = fresh(inputs, tmp_path / "run")
    shutil.copytree(reference["folder"] / "runs", folder / "runs", symlinks=True)
    (folder / "pred.csv").write_text("stale.jpg, 0000\n")  # an older file must stay whole
    engine(folder, [*PREDICT, "--batch-size", "2"], fault="predict-batch:2")
    assert (folder / "pred.csv").read_text() == "stale.jpg, 0000\n"
    engine(folder, [*PREDICT, "--batch-size", "2"])
    assert (folder / "pred.csv").read_text() == reference["pred"]
