"""Every float option finite and in range (issue 21 item 7): NaN, Infinity or a negative
learning rate is one line naming the key, the value and the valid range, before any work."""

from __future__ import annotations

import json
import typing
from dataclasses import fields

import pytest
from click.testing import CliRunner
from test_train_cli import _store

from engine.cli import main
from engine.errors import UserError
from features.config import FeatureConfig
from heads.config import TrainConfig
from heads.screen.config import ScreenConfig
from heads.screen.mixture_math import MixtureOptions
from heads.screen.probe import ProbeConfig
from heads.screen.relabel import FolderMixtureConfig
from shards.config import ShardConfig

CONFIGS = (TrainConfig, ScreenConfig, ProbeConfig, FeatureConfig, ShardConfig,
           FolderMixtureConfig, MixtureOptions)  # fmt: skip


def _float_fields(cls) -> list[str]:
    hints = typing.get_type_hints(cls)
    return [f.name for f in fields(cls)
            if float in (hints[f.name], *typing.get_args(hints[f.name]))]  # fmt: skip


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_float_field_has_a_range_and_refuses_nan_and_infinity(cls):
    names = _float_fields(cls)
    assert set(names) == set(getattr(cls, "RANGES", {})), "a float field without a range"
    for name in names:
        for bad in (float("nan"), float("inf"), -float("inf")):
            with pytest.raises(UserError) as err:
                cls(**{name: bad})
            message = str(err.value)
            assert f".{name} must be a finite number in " in message and repr(bad) in message
            assert "\n" not in message


def test_negative_learning_rates_are_refused_with_the_valid_range():
    with pytest.raises(UserError, match=r"^train.lr_head must be a finite number in \(0, inf\), "
                       r"got -0.001$"):  # fmt: skip
        TrainConfig(lr_head=-1e-3)
    with pytest.raises(UserError, match=r"^train.lr_tail must be .* got 0.0$"):
        TrainConfig(lr_tail=0.0)
    with pytest.raises(UserError, match=r"^screen.probe.lr must be"):
        ProbeConfig(lr=-0.1)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-0.5"])
def test_a_config_file_with_a_bad_lr_head_exits_1_in_one_line_and_writes_nothing(tmp_path, value):
    store, _ = _store(tmp_path)
    cfg = tmp_path / "c.json"
    # NaN / Infinity: what json.dumps writes for float("nan") / float("inf")
    cfg.write_text('{"rounds": 0, "train": {"lr_head": ' + value + "}}")
    assert json.loads(cfg.read_text())["train"]["lr_head"] != 1e-3
    runs = tmp_path / "runs"
    result = CliRunner().invoke(main, ["train", "--features", str(store), "--config", str(cfg),
                                       "--runs", str(runs), "--out", str(runs / "r")])  # fmt: skip
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "train.lr_head must be a finite number in (0, inf)" in lines[0]
    assert not (runs / "r" / "model.pt").exists() and not (runs / "r").exists()
