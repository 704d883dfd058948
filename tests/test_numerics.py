"""`heads.numerics`: deterministic kernels and TF32 set in one place, read back from torch,
applied by train / predict / features (on by default, `--no-deterministic` to opt out), and
on a GPU two seeded runs give the same model.pt bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_train_cli import _store

import heads.numerics
from engine.cli import main
from heads.numerics import CUBLAS_ENV, apply_numerics, numerics_flags

ROOT = Path(__file__).resolve().parents[1]


def test_flags_are_set_and_read_back(monkeypatch):
    monkeypatch.delenv(CUBLAS_ENV, raising=False)
    on = apply_numerics(deterministic=True, tf32=True)
    assert on == numerics_flags()
    assert on["deterministic"] and on["warn_only"] and on["cudnn_deterministic"]
    assert not on["cudnn_benchmark"] and on["cublas_workspace"] == ":4096:8"
    assert on["tf32_matmul"] and on["tf32_cudnn"]
    assert torch.get_float32_matmul_precision() == "high"
    off = apply_numerics(deterministic=False, tf32=False)
    assert not off["deterministic"] and not off["cudnn_deterministic"]
    assert not off["tf32_matmul"] and not off["tf32_cudnn"]
    assert torch.get_float32_matmul_precision() == "highest"


@pytest.fixture
def calls(monkeypatch):
    """Every apply_numerics call of a command, instead of the real one."""
    seen = []
    monkeypatch.setattr(heads.numerics, "apply_numerics", lambda **kw: seen.append(kw) or {})
    return seen


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_train_is_deterministic_by_default_and_can_opt_out(tmp_path, calls):
    store, _ = _store(tmp_path)
    common = ("--features", store, "--rounds", 0, "--weights", "random", "--runs", tmp_path)
    assert _invoke("train", *common, "--out", tmp_path / "a").exit_code == 0
    assert _invoke("train", *common, "--out", tmp_path / "b", "--no-deterministic").exit_code == 0
    assert calls == [{"deterministic": True}, {"deterministic": False}]
    saved = [json.loads((tmp_path / r / "config.json").read_text()) for r in "ab"]
    assert [c["train"]["deterministic"] for c in saved] == [True, False]  # --config re-makes it


def test_predict_and_features_apply_the_settings(tmp_path, calls, monkeypatch):
    import features.extract
    import heads.predict

    monkeypatch.setattr(heads.predict, "predict_source", lambda *a, **k: (0, "p.csv", "p.zip"))
    monkeypatch.setattr(features.extract, "extract", lambda shards, out, cfg: out)
    assert _invoke("predict", tmp_path, "--model", tmp_path).exit_code == 0
    result = _invoke("features", tmp_path, "--out", tmp_path / "f.zarr", "--no-deterministic")
    assert result.exit_code == 0, result.output
    assert calls == [{"deterministic": True}, {"deterministic": False}]


@pytest.mark.gpu
def test_two_seeded_gpu_runs_write_the_same_model_bytes(tmp_path):
    """Each run in a fresh process, as a user re-makes a run: the settings must hold from
    the first CUDA kernel on. k = 1 exercises the tail (bf16 autocast, L2-SP, fused AdamW)."""
    store, _ = _store(tmp_path, depth=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(CUBLAS_ENV, None)
    for run in ("a", "b"):
        cmd = [sys.executable, "-m", "engine", "train", "--features", str(store), "--rounds", "0",
               "--unfreeze-last", "1", "--weights", "random", "--seed", "3",
               "--runs", str(tmp_path), "--out", str(tmp_path / run)]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    a, b = (torch.load(tmp_path / r / "model.pt", weights_only=True) for r in "ab")
    for key, value in a["head"]["state_dict"].items():
        assert torch.equal(value, b["head"]["state_dict"][key]), key
    for key, value in a["visual_state_dict"].items():
        assert torch.equal(value, b["visual_state_dict"][key]), key
    assert (tmp_path / "a/model.pt").read_bytes() == (tmp_path / "b/model.pt").read_bytes()


def test_screen_applies_the_settings_before_its_knn_and_probe(tmp_path, calls):
    (tmp_path / "empty.zarr").mkdir()
    result = _invoke("screen", "--features", tmp_path / "empty.zarr", "--out", tmp_path / "s")
    assert result.exit_code == 1, result.output  # not a store: refused after the settings
    assert calls == [{}]  # the defaults: deterministic, TF32
