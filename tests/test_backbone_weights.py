"""`heads.inputs.backbone_weights`: the store's weights win, and a different --weights says so."""

import logging

import pytest

from engine.errors import UserError
from heads.inputs import backbone_weights

OPENAI_STORE = {"weights": {"name": "openai", "sha256": "ab"}}


def test_store_weights_win_and_a_different_choice_is_reported(caplog):
    with caplog.at_level(logging.WARNING, logger="heads.inputs"):
        assert backbone_weights(OPENAI_STORE, "random", need=True) == "openai"
    assert "--weights random is not what made the feature store ('openai')" in caplog.text


def test_matching_or_default_weights_are_silent(caplog, tmp_path):
    ckpt = tmp_path / "ViT-B-32.pt"
    ckpt.write_bytes(b"x")
    file_store = {"weights": {"name": "ViT-B-32.pt", "sha256": "cd"}}
    with caplog.at_level(logging.WARNING, logger="heads.inputs"):
        assert backbone_weights(OPENAI_STORE, "openai", need=True) == "openai"
        assert backbone_weights({"weights": {"name": "random"}}, "random", need=True) == "random"
        assert backbone_weights(file_store, str(ckpt), need=True) == str(ckpt)
    assert caplog.text == ""


def test_unknown_store_weights_need_their_file_only_for_a_tail():
    store = {"weights": {"name": "simulated", "sha256": None}}
    assert backbone_weights(store, "openai", need=False) is None
    with pytest.raises(UserError, match="made with weights 'simulated'; pass that file"):
        backbone_weights(store, "openai", need=True)
