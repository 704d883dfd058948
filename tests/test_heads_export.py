"""The merged model: open_clip loads it, and images through it == cached store through the tail."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from heads_helpers import RunsCode, features_from_images, write_store

from engine.errors import UserError
from features.store import FeatureStore
from heads.config import TrainConfig
from heads.export import load_model, save_model
from heads.trainer import fit

CLASSES = ["0001", "0002", "0013"]
# Largest logit change fp16 weight storage may cause (cosines / 0.05; measured 9e-4).
FP16_TOLERANCE = 0.01


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


def test_model_pt_is_the_fp16_visual_tower_open_clip_loads(clip, trained_run):
    run, _, trained = trained_run
    payload = torch.load(run / "model.pt", weights_only=True)  # tensors and plain data only
    state = payload["visual_state_dict"]
    assert {v.dtype for v in state.values()} == {torch.float16}
    assert not any(k.startswith(("transformer.", "token_embedding")) for k in payload)
    fresh = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True).visual
    fresh.load_state_dict(state)  # strict: every key, every shape
    original = {k: v.half() for k, v in clip.visual.state_dict().items()}
    changed = {k for k, v in state.items() if not torch.equal(v, original[k])}
    tail_keys = {"proj", "ln_post.weight", "ln_post.bias"}
    assert tail_keys <= changed
    # only the last 2 blocks + ln_post + proj were trained
    assert all(k in tail_keys or k.startswith("transformer.resblocks.1") for k in changed)
    assert not any(k.startswith("transformer.resblocks.1.") for k in changed)
    assert payload["classes"] == CLASSES and payload["unfreeze_last"] == 2
    # 88M fp16 weights: 176 MB, where the whole fp32 CLIP was 605 MB
    assert 170e6 < (run / "model.pt").stat().st_size < 180e6


def test_predictions_from_images_equal_predictions_from_store(trained_run, images, tmp_path):
    run, data, trained = trained_run
    model = load_model(run)
    from_images = model.logits_from_images(images).numpy()
    store = write_store(tmp_path / "s.zarr", data)
    from_store = model.as_trained().predict_logits(store)
    # the store caches fp16 tokens, the model fp16 weights: equal up to that rounding
    np.testing.assert_allclose(from_images, from_store, atol=2e-2)
    assert (from_images.argmax(1) == from_store.argmax(1)).all()
    # fp16 storage of the weights, against the fp32 model that was trained
    np.testing.assert_allclose(trained.predict_logits(data), from_store, atol=FP16_TOLERANCE)


def test_fp16_model_predicts_like_the_fp32_one_it_stores(trained_run, images):
    """The stated tolerance of fp16 storage, on images through the whole merged tower."""
    run, _, trained = trained_run
    model = load_model(run)
    reference = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True).visual
    reference.load_state_dict(trained.visual_state_dict())  # the fp32 weights as trained
    with torch.no_grad():
        expected = trained.head(reference.eval()(images)).numpy()
    got = model.logits_from_images(images).numpy()
    assert np.abs(got - expected).max() <= FP16_TOLERANCE
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert all(p.dtype == torch.float32 for p in model.visual.parameters())


def test_load_model_errors(tmp_path):
    with pytest.raises(UserError, match="no model at"):
        load_model(tmp_path)
    torch.save({"format": "other"}, tmp_path / "model.pt")
    with pytest.raises(UserError, match="not an engine model"):
        load_model(tmp_path)
    torch.save({"format": "engine.model/1", "state_dict": {}}, tmp_path / "model.pt")
    with pytest.raises(UserError, match="older engine"):
        load_model(tmp_path)
    torch.save([1, 2], tmp_path / "model.pt")
    with pytest.raises(UserError, match="it holds a list"):
        load_model(tmp_path)


def test_a_model_carrying_code_is_refused_in_one_line(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"format": "engine.model/2", "head": RunsCode(marker)}, tmp_path / "model.pt")
    with pytest.raises(UserError) as err:
        load_model(tmp_path)
    message = str(err.value)
    assert "\n" not in message and "refused" in message and "getattr" in message
    assert not marker.exists()  # never constructed


def test_a_truncated_model_is_one_line(tmp_path, trained_run):
    run, _, _ = trained_run
    whole = (run / "model.pt").read_bytes()
    for size in (0, 100, len(whole) // 2):
        (tmp_path / "model.pt").write_bytes(whole[:size])
        with pytest.raises(UserError, match="truncated or corrupt") as err:
            load_model(tmp_path)
        assert "\n" not in str(err.value) and "engine train" in str(err.value)


def test_head_only_model_without_weights_predicts_from_stores_only(tmp_path):
    data = FeatureStore.from_arrays(
        embed=np.eye(3, 512, dtype=np.float16), labels=np.arange(3), classes=CLASSES
    )
    trained = fit(data, TrainConfig(epochs_lp=1, batch_size=2))
    save_model(tmp_path, trained)  # no CLIP model at hand: the head is all there is
    model = load_model(tmp_path)
    assert model.visual is None
    np.testing.assert_array_equal(
        model.as_trained().predict_logits(data), trained.predict_logits(data)
    )
    with pytest.raises(UserError, match="holds no image tower"):
        model.logits_from_images(torch.zeros(1, 3, 224, 224))
