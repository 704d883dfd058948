"""Every config dataclass goes to plain JSON and back unchanged; bad keys fail in one line."""

from __future__ import annotations

import json

import pytest

from engine.config import from_dict, to_dict
from engine.errors import UserError
from features.config import FeatureConfig
from heads.config import TrainConfig
from heads.pipeline import RunConfig, run_config_from
from heads.screen import ScreenConfig
from heads.screen.probe import ProbeConfig
from shards.config import ShardConfig

# One instance per config with non-default values, so a field the round trip drops shows.
CONFIGS = [
    ShardConfig(shard_size=64, short_side=None, workers=2, labeled=False, force=True),
    FeatureConfig(depth=3, views=2, weights="random", backend="pil", workers=0, seed=5),
    TrainConfig(unfreeze_last=2, epochs_lp=3, loss="sce", views=1, seed=9),
    ProbeConfig(steps=7, loss="gce", logit_adjust=0.5),
    ScreenConfig(
        rounds=1,
        knn_k=4,
        seed=3,
        device="cpu",
        probe=ProbeConfig(steps=11, lr=0.1),
        extras=("dfr",),
    ),  # fmt: skip
    RunConfig(
        features="f.zarr",
        weights="random",
        class_names="names.csv",
        rounds=1,
        train=TrainConfig(unfreeze_last=1, seed=4, loss="ce"),
        screen=ScreenConfig(knn_k=6, probe=ProbeConfig(steps=5)),
    ),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: type(c).__name__)
def test_every_config_round_trips_through_json(cfg):
    text = json.dumps(to_dict(cfg))  # plain JSON: no repr strings, no objects
    back = from_dict(type(cfg), json.loads(text))
    assert back == cfg
    assert json.dumps(to_dict(back)) == text


def test_nested_probe_is_a_dict_not_its_repr():
    d = to_dict(ScreenConfig(probe=ProbeConfig(steps=12)))
    assert d["probe"]["steps"] == 12 and isinstance(d["probe"], dict)


def test_run_config_keeps_one_seed_rounds_and_device():
    cfg = RunConfig(rounds=1, train=TrainConfig(seed=8, device="cpu"))
    assert (cfg.screen.rounds, cfg.screen.seed, cfg.screen.device) == (1, 8, "cpu")


def test_unknown_nested_key_names_the_section_and_the_valid_keys():
    with pytest.raises(UserError) as err:
        run_config_from({"screen": {"knn": 5}})
    text = str(err.value)
    assert "unknown key(s) knn in config section 'config.screen'; valid: " in text
    assert "knn_k" in text and "\n" not in text


def test_unknown_top_level_and_probe_keys_are_refused():
    with pytest.raises(UserError, match=r"'config'; valid: class_names, features, rounds"):
        run_config_from({"round": 2})
    with pytest.raises(
        UserError, match=r"'config.screen.probe'; valid: logit_adjust, loss, lr, steps"
    ):
        run_config_from({"screen": {"probe": {"stepz": 1}}})


def test_a_value_the_config_refuses_is_one_line_naming_the_section():
    with pytest.raises(UserError, match=r"config section 'config.screen': need rounds >= 0"):
        run_config_from({"screen": {"knn_k": 0}})
    with pytest.raises(UserError, match=r"must be a JSON object, got 'ProbeConfig\(steps=30\)'"):
        run_config_from({"screen": {"probe": "ProbeConfig(steps=30)"}})


def test_default_loss_follows_the_rounds():
    assert run_config_from({"rounds": 0}).train.loss == "gce"
    assert run_config_from({"rounds": 2}).train.loss == "ce"
    assert run_config_from({"rounds": 0, "train": {"loss": "sce"}}).train.loss == "sce"
