"""What `engine train` leaves behind and how `engine predict` treats a bad model.pt (CLI)."""

from __future__ import annotations

import torch
from click.testing import CliRunner
from test_train_cli import _store

from engine.cli import main


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_finished_run_keeps_model_not_checkpoint_and_bad_models_are_one_line(tmp_path):
    store, _ = _store(tmp_path)
    run = tmp_path / "runs" / "r"
    args = ("--features", store, "--rounds", 0, "--weights", "random", "--runs", run.parent)
    result = _invoke("train", *args, "--out", run)
    assert result.exit_code == 0, result.output
    assert (run / "model.pt").exists() and not (run / "checkpoint").exists()
    payload = torch.load(run / "model.pt", weights_only=True)
    assert {v.dtype for v in payload["visual_state_dict"].values()} == {torch.float16}

    whole = (run / "model.pt").read_bytes()
    (run / "model.pt").write_bytes(whole[: len(whole) // 3])  # a copy cut short
    out = tmp_path / "pred.csv"
    result = _invoke("predict", store, "--model", run, "--out", out)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "truncated or corrupt" in lines[0] and "model.pt" in lines[0]
    assert not out.exists()
