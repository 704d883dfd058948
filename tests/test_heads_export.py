"""The merged model: open_clip loads it, and images through it == cached store through the tail."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from test_heads_helpers import features_from_images, write_store

from engine.errors import UserError
from heads.config import TrainConfig
from heads.export import load_model, save_model
from heads.trainer import fit

CLASSES = ["0001", "0002", "0013"]


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True).eval()


@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(6, 3, 224, 224, generator=gen)


@pytest.fixture(scope="module")
def trained_run(clip, images, tmp_path_factory):
    """k = 2 trained on tokens of a depth-3 store (one frozen block advanced), then exported."""
    data = features_from_images(clip.visual, images, [0, 1, 2, 0, 1, 2], CLASSES, depth=3)
    cfg = TrainConfig(
        unfreeze_last=2, epochs_lp=1, epochs_ft=1, batch_size=4, lr_tail=1e-3, wise_alpha=0.7
    )
    trained = fit(data, cfg, clip=clip)
    run = tmp_path_factory.mktemp("run")
    save_model(run, trained, clip)
    return run, data, trained


def test_merged_state_dict_loads_into_open_clip(clip, trained_run):
    run, _, trained = trained_run
    payload = torch.load(run / "model.pt", weights_only=False)
    fresh = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True)
    fresh.load_state_dict(payload["state_dict"])  # strict: every key, every shape
    original = clip.state_dict()
    changed = {k for k, v in payload["state_dict"].items() if not torch.equal(v, original[k])}
    tail_keys = {"visual.proj", "visual.ln_post.weight", "visual.ln_post.bias"}
    assert tail_keys <= changed
    # only the last 2 blocks + ln_post + proj were trained
    assert all(k in tail_keys or ".resblocks.10." in k or ".resblocks.11." in k for k in changed)
    assert payload["classes"] == CLASSES and payload["unfreeze_last"] == 2


def test_predictions_from_images_equal_predictions_from_store(trained_run, images, tmp_path):
    run, data, trained = trained_run
    model = load_model(run)
    from_images = model.logits_from_images(images).numpy()
    store = write_store(tmp_path / "s.zarr", data)
    from_store = model.as_trained().predict_logits(store)
    # the store caches fp16 tokens: equal up to that rounding
    np.testing.assert_allclose(from_images, from_store, atol=2e-2)
    assert (from_images.argmax(1) == from_store.argmax(1)).all()
    np.testing.assert_allclose(trained.predict_logits(data), from_store, rtol=1e-5, atol=1e-5)


def test_load_model_errors(tmp_path):
    with pytest.raises(UserError, match="no model at"):
        load_model(tmp_path)
    torch.save({"format": "other"}, tmp_path / "model.pt")
    with pytest.raises(UserError, match="not an engine model"):
        load_model(tmp_path)
