"""Training checkpoints: plain tensors only, refused in one line otherwise, gone once the model is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from heads_helpers import RunsCode, interrupted_fit

from engine.errors import UserError
from features.store import FeatureStore
from heads.checkpoint import CHECKPOINT
from heads.config import TrainConfig
from heads.export import MODEL_FILE, save_model
from heads.trainer import fit

CLASSES = ["0001", "0002", "0003"]


def _data() -> FeatureStore:
    rng = np.random.default_rng(0)
    embed = rng.standard_normal((12, 8)).astype(np.float16)
    return FeatureStore.from_arrays(embed=embed, labels=np.arange(12) % 3, classes=CLASSES)


def test_finished_model_removes_the_checkpoint(tmp_path):
    cfg = TrainConfig(epochs_lp=2, batch_size=4)
    trained = fit(_data(), cfg, checkpoint_dir=tmp_path / "checkpoint")
    assert (tmp_path / "checkpoint" / CHECKPOINT).exists()  # written per epoch, for resuming
    save_model(tmp_path, trained)
    assert (tmp_path / MODEL_FILE).exists()
    assert not (tmp_path / "checkpoint").exists()


def test_checkpoint_is_plain_and_resumes_with_weights_only(tmp_path):
    cfg = TrainConfig(epochs_lp=3, batch_size=4)
    reference = fit(_data(), cfg).predict_logits(_data())

    interrupted_fit(_data(), cfg, tmp_path, after_epoch=1)
    torch.load(tmp_path / CHECKPOINT, weights_only=True)  # tensors and plain data only
    seen = []
    resumed = fit(_data(), cfg, checkpoint_dir=tmp_path, on_epoch=lambda e, m: seen.append(e))
    assert seen == [1, 2]  # stopped while epoch 1 was being logged: its checkpoint is missing
    assert np.array_equal(resumed.predict_logits(_data()), reference)


def test_a_checkpoint_carrying_code_is_refused_in_one_line(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"epoch": 1, "head": RunsCode(marker)}, tmp_path / CHECKPOINT)
    with pytest.raises(UserError, match="refused") as err:
        fit(_data(), TrainConfig(epochs_lp=1, batch_size=4), checkpoint_dir=tmp_path)
    assert "\n" not in str(err.value) and f"delete {tmp_path / CHECKPOINT}" in str(err.value)
    assert not marker.exists()


def test_a_truncated_checkpoint_is_one_line(tmp_path):
    cfg = TrainConfig(epochs_lp=1, batch_size=4)
    fit(_data(), cfg, checkpoint_dir=tmp_path)
    path = tmp_path / CHECKPOINT
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UserError, match="truncated or corrupt") as err:
        fit(_data(), cfg, checkpoint_dir=tmp_path)
    assert "\n" not in str(err.value)


def test_equal_payloads_give_equal_bytes_whatever_objects_they_share(tmp_path):
    """Issue 21.17: model.pt re-made from config.json had equal tensors but other bytes: the
    pickle memo back-references a string the payload holds twice as one object, and writes
    an equal copy in full."""
    from heads.checkpoint import load_plain, save_plain

    weights = {"w": torch.arange(6, dtype=torch.float16).reshape(2, 3)}
    shared = "cosine"
    copy = "".join(["cos", "ine"])  # equal, not the same object
    assert copy == shared and copy is not shared
    a = save_plain(tmp_path / "a.pt", {"w": weights, "sched": shared, "also": shared})
    b = save_plain(tmp_path / "b.pt", {"w": weights, "sched": shared, "also": copy})
    assert a.read_bytes() == b.read_bytes()
    back = load_plain(b, "a model", "")
    assert back["also"] == "cosine" and torch.equal(back["w"]["w"], weights["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt"]  # no temp files
