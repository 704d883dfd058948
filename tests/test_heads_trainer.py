"""The trainer on in-memory arrays and tiny ViTs: learning, equivalences, seeds, resume."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from heads_helpers import features_from_images, tiny_visual, write_store

from engine.errors import UserError
from features.split import split_visual
from features.store import FeatureStore
from heads.config import TrainConfig
from heads.head import class_prototypes, make_head
from heads.trainer import fit

CLASSES = ["0003", "0010", "0042", "0100"]


def _toy_embeddings(n_per_class=10, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    means = np.eye(4, dim) * 3
    x = np.concatenate([means[k] + 0.5 * rng.standard_normal((n_per_class, dim)) for k in range(4)])
    labels = np.repeat(np.arange(4), n_per_class)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return FeatureStore.from_arrays(embed=x.astype(np.float16), labels=labels, classes=CLASSES)


@pytest.fixture(scope="module")
def tiny():
    visual = tiny_visual()
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(24, 3, 64, 64, generator=gen)
    labels = np.arange(24) % 4
    return visual, images, labels


def test_head_learns_separable_toy_set_to_100_percent():
    data = _toy_embeddings()
    for head in ("cosine", "linear"):
        # zero init (no prototypes) so the head has to learn everything itself
        cfg = TrainConfig(epochs_lp=30, batch_size=8, lr_head=1e-2, head=head, tau=0.0, loss="ce")
        model = fit(data, cfg, head_init=np.zeros((4, 16), np.float32) + 1e-3)
        pred = model.predict_logits(data).argmax(1)
        assert (pred == data.labels).all(), head


def test_prototypes_are_weighted_class_means():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    targets = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    protos = class_prototypes(x, targets, np.array([1.0, 3.0, 1.0], dtype=np.float32))
    expected0 = np.array([1.0, 3.0]) / np.linalg.norm([1.0, 3.0])
    np.testing.assert_allclose(protos[0], expected0, rtol=1e-6)
    np.testing.assert_allclose(protos[1], [2**-0.5, 2**-0.5], rtol=1e-6)
    # empty class 2: the global mean direction of the normalised rows
    mean = (x / np.linalg.norm(x, axis=1, keepdims=True)).mean(0)
    np.testing.assert_allclose(protos[2], mean / np.linalg.norm(mean), rtol=1e-6)


def test_cosine_head_is_scaled_cosine():
    head = make_head("cosine", 2, dim=3, temperature=0.5)
    head.reset_classifier(2, weight=torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    x = torch.tensor([[3.0, 4.0, 0.0]])
    torch.testing.assert_close(head(x), torch.tensor([[0.6 / 0.5, 0.0]]))
    assert torch.equal(head.forward_head(x, pre_logits=True), x)


def test_tail_reproduces_visual_on_a_tiny_vit(tiny):
    visual, images, _ = tiny
    with torch.no_grad():
        full = visual(images)
        for depth in range(4):
            trunk, tail = split_visual(visual, depth)
            torch.testing.assert_close(tail(trunk(images)), full)


def _cfg(**kw):
    base = dict(unfreeze_last=1, epochs_lp=2, epochs_ft=2, batch_size=8, lr_tail=1e-3, views=None)
    base.update(kw)
    return TrainConfig(**base)


def test_deeper_store_serves_smaller_k(tiny):
    visual, images, labels = tiny
    d1 = features_from_images(visual, images, labels, CLASSES, depth=1, views=2)
    d3 = features_from_images(visual, images, labels, CLASSES, depth=3, views=2)
    m1 = fit(d1, _cfg(), clip=visual)
    m3 = fit(d3, _cfg(), clip=visual)
    # fp16 tokens at different depths: equal up to the cache's rounding
    np.testing.assert_allclose(m1.predict_logits(d1), m3.predict_logits(d3), atol=0.05)
    assert (m1.predict_logits(d3).argmax(1) == m3.predict_logits(d3).argmax(1)).mean() >= 0.9


def test_same_seed_same_model_other_seed_differs(tiny):
    visual, images, labels = tiny
    data = features_from_images(visual, images, labels, CLASSES, depth=2, views=2)
    a = fit(data, _cfg(seed=3), clip=visual).predict_logits(data)
    b = fit(data, _cfg(seed=3), clip=visual).predict_logits(data)
    c = fit(data, _cfg(seed=4), clip=visual).predict_logits(data)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_wise_alpha_zero_gives_pretrained_tail_and_caller_model_untouched(tiny):
    visual, images, labels = tiny
    before = copy.deepcopy(visual.state_dict())
    data = features_from_images(visual, images, labels, CLASSES, depth=2)
    trained = fit(data, _cfg(unfreeze_last=2, wise_alpha=0.0), clip=visual)
    for name, t in trained.visual_state_dict().items():
        assert torch.equal(t, before[name]), name
    moved = fit(data, _cfg(unfreeze_last=2, wise_alpha=1.0), clip=visual)
    assert not torch.equal(moved.visual_state_dict()["proj"], before["proj"]), (
        "fine-tuning with alpha=1 must move the tail"
    )
    for name, t in visual.state_dict().items():
        assert torch.equal(t, before[name])


def test_resume_after_interruption_is_identical(tiny, tmp_path):
    visual, images, labels = tiny
    data = features_from_images(visual, images, labels, CLASSES, depth=1, views=2)
    cfg = _cfg(epochs_lp=2, epochs_ft=3)
    reference = fit(data, cfg, clip=visual).predict_logits(data)

    class Stop(Exception):
        pass

    def stop_after(limit):
        def on_epoch(epoch, metrics):
            if epoch + 1 == limit:
                raise Stop

        return on_epoch

    for limit in (1, 3):  # stop inside the LP phase, then inside the FT phase
        ckpt = tmp_path / f"ckpt{limit}"
        with pytest.raises(Stop):
            fit(data, cfg, clip=visual, checkpoint_dir=ckpt, on_epoch=stop_after(limit + 1))
        seen = []
        resumed = fit(
            data,
            cfg,
            clip=visual,
            checkpoint_dir=ckpt,
            on_epoch=lambda e, m, seen=seen: seen.append(e),
        )
        assert seen == list(range(limit, cfg.epochs))
        assert [h["epoch"] for h in resumed.history] == list(range(cfg.epochs))
        assert np.array_equal(resumed.predict_logits(data), reference)


def test_checkpoint_of_other_weights_is_not_resumed(tiny, tmp_path):
    """Screening changes targets/weights, not the config: such a checkpoint must start over."""
    visual, images, labels = tiny
    data = features_from_images(visual, images, labels, CLASSES, depth=1, views=1)
    cfg = _cfg(epochs_lp=2, epochs_ft=1)
    ckpt = tmp_path / "ckpt"
    fit(data, cfg, clip=visual, checkpoint_dir=ckpt)
    weights = np.ones(len(labels), dtype=np.float32)
    weights[:6] = 0.0

    def epochs_run() -> list[int]:
        seen = []
        fit(data, cfg, None, weights, clip=visual, checkpoint_dir=ckpt,
            on_epoch=lambda e, m: seen.append(e))  # fmt: skip
        return seen

    assert epochs_run() == list(range(cfg.epochs))  # every epoch ran again
    assert epochs_run() == []  # same inputs as the finished run: nothing left to do


def test_zarr_store_equals_in_memory(tiny, tmp_path):
    visual, images, labels = tiny
    data = features_from_images(visual, images, labels, CLASSES, depth=2, views=2)
    store = write_store(tmp_path / "train.zarr", data)
    a = fit(data, _cfg(), clip=visual)
    b = fit(store, _cfg(), clip=visual)
    assert np.array_equal(a.predict_logits(data), b.predict_logits(store))
    idx = np.array([5, 0, 7])
    np.testing.assert_allclose(
        b.predict_logits(store, idx), b.predict_logits(store)[idx], rtol=1e-6
    )


def test_targets_weights_and_indices(tiny):
    visual, images, labels = tiny
    data = features_from_images(visual, images, labels, CLASSES, depth=0)
    targets = np.eye(4, dtype=np.float32)[labels]
    weights = np.ones(len(labels), dtype=np.float32)
    weights[:4] = 0.0
    cfg = TrainConfig(epochs_lp=2, batch_size=8)
    a = fit(data, cfg, targets, weights)
    b = fit(data, cfg, targets, indices=np.arange(4, len(labels)))
    # weight 0 drops a sample exactly as leaving it out does
    assert np.array_equal(a.predict_logits(data), b.predict_logits(data))
    assert a.class_counts == [5.0, 5.0, 5.0, 5.0]


def test_unfreeze_more_than_store_depth_is_a_user_error(tiny):
    visual, images, labels = tiny
    data = features_from_images(visual, images, labels, CLASSES, depth=1)
    with pytest.raises(UserError, match=r"--unfreeze-last 2.*depth 1.*--unfreeze-last 2"):
        fit(data, _cfg(unfreeze_last=2), clip=visual)


def test_config_validation_names_choices():
    with pytest.raises(UserError, match="choose one of"):
        TrainConfig(loss="nope")
    with pytest.raises(UserError, match="unknown key.s. epochs in config section 'train'"):
        TrainConfig.from_dict({"epochs": 3})
    assert TrainConfig.from_dict(TrainConfig(seed=5).to_dict()) == TrainConfig(seed=5)
