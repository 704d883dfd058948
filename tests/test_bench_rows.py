"""The bench rows measure what they name: the full baseline trains every block, the trunk
row runs the trunk's blocks only."""

from __future__ import annotations

import pytest
import torch

from bench import features_bench, train_bench
from bench.tiny_clip import tiny_clip
from features.runner import TrunkRunner


def test_full_baseline_trains_every_visual_parameter_even_of_a_frozen_shared_model():
    clip = tiny_clip().model
    clip.visual.requires_grad_(False)  # what another stage may have done to the shared model
    baseline = train_bench.FullBaseline(clip, classes=5, batch=2, device="cpu")
    before = {n: p.detach().clone() for n, p in baseline.model.named_parameters()}
    baseline.step()
    for name, param in baseline.model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
        assert not torch.equal(param.detach(), before[name]), name
    assert not any(p.requires_grad for p in clip.visual.parameters())  # the copy was trained


def test_trunk_row_times_the_trunk_without_the_tail(monkeypatch):
    calls = []
    original = TrunkRunner.trunk_tokens

    def counting(self, images):
        calls.append(images.shape)
        return original(self, images)

    monkeypatch.setattr(TrunkRunner, "trunk_tokens", counting)
    monkeypatch.setattr(TrunkRunner, "compute", lambda *a: pytest.fail("trunk row ran the tail"))
    row = features_bench.bench_trunk(tiny_clip(), 2, 2, torch.device("cpu"), repeats=1)
    assert row["backend"] == "trunk 10/12 blocks, fp32, batch 2"
    assert len(calls) == 2 and calls[0] == (1, 2, 3, 224, 224)  # warm-up + one timed call
    assert row["images_per_s"] > 0 and row["baseline_images_per_s"] > 0
