"""Head-only batch size by a timed probe: the choice rule on faked timers, and its wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from heads_helpers import interrupted_fit

from features.store import FeatureStore
from heads import head_batch
from heads.config import TrainConfig
from heads.trainer import fit


def test_launch_bound_steps_pick_the_largest_batch():
    # 1 ms of launches per step, 1 ns per sample: the rate grows with the batch until 16384
    batch, rates = head_batch.pick_batch_size(
        lambda b: 1e-3 + b * 1e-9, list(head_batch.CANDIDATES)
    )
    assert batch == 16384
    assert rates[512] == pytest.approx(512 / (1e-3 + 512e-9))


def test_compute_bound_steps_keep_the_smallest_batch():
    batch, _ = head_batch.pick_batch_size(
        lambda b: b * 1e-7, [2048, 512, 1024]
    )  # same rate for all
    assert batch == 512


def test_the_smallest_batch_within_ten_percent_of_the_fastest_wins():
    seconds = {512: 1.0, 1024: 1.0, 2048: 1.1, 4096: 2.0}  # rates 512, 1024, 1862, 2048 /s
    batch, rates = head_batch.pick_batch_size(seconds.__getitem__, list(seconds))
    assert batch == 2048  # 1862 >= 0.9 * 2048; 1024 is not
    assert max(rates, key=rates.get) == 4096


def test_candidates_keep_sixteen_steps_per_epoch_and_lr_scales_linearly():
    assert head_batch.batch_candidates(300_000) == list(head_batch.CANDIDATES)  # 16384: 19 steps
    assert head_batch.batch_candidates(20_000) == [512, 1024]  # 2048 would give 10
    assert head_batch.batch_candidates(100) == [512]
    assert head_batch.scaled_lr(1e-3, 4096) == pytest.approx(8e-3)


def test_step_timer_times_only_the_repeats_on_its_clock():
    calls, ticks = [], iter([10.0, 10.5])
    seconds = head_batch.step_timer(calls.append, torch.device("cpu"), warmup=2, repeats=5,
                            clock=lambda: next(ticks))  # fmt: skip
    assert seconds(1024) == pytest.approx(0.1)
    assert calls == [1024] * 7


def _data(n=20_000) -> FeatureStore:
    rng = np.random.default_rng(0)
    embed = rng.standard_normal((n, 8)).astype(np.float16)
    return FeatureStore.from_arrays(embed=embed, labels=np.arange(n) % 3, classes=["a", "b", "c"])


@pytest.fixture
def probing(monkeypatch):
    """The CUDA path on the CPU, with a faked timer whose choice the test sets."""
    picked = {"curve": lambda b: 1e-3 + b * 1e-9}
    steps = []

    def fake_timer(step, device):
        def seconds(batch):
            step(batch)  # the real probe step runs (on a copy of the head)
            steps.append(batch)
            return picked["curve"](batch)

        return seconds

    monkeypatch.setattr(head_batch, "probes_batch", lambda cfg, device: cfg.unfreeze_last == 0)
    monkeypatch.setattr(head_batch, "step_timer", fake_timer)
    picked["steps"] = steps
    return picked


def test_fit_trains_with_the_probed_batch_and_nothing_else_changes(probing):
    data = _data()
    probed = fit(data, TrainConfig(epochs_lp=2))
    assert probing["steps"] == [512, 1024]  # the candidates for 20k samples, each timed
    assert probed.cfg.batch_size == 1024 and probed.cfg.lr_head == pytest.approx(2e-3)
    given = fit(data, TrainConfig(epochs_lp=2, batch_size=1024, lr_head=2e-3))
    # the probe trained a copy: the run is exactly the one with that batch given
    assert [h["loss"] for h in probed.history] == [h["loss"] for h in given.history]
    assert np.array_equal(probed.predict_logits(data), given.predict_logits(data))


def test_explicit_batch_and_cpu_default_are_not_probed(probing, monkeypatch):
    data = _data(2_000)
    assert fit(data, TrainConfig(epochs_lp=1, batch_size=256)).cfg.batch_size == 256
    monkeypatch.setattr(head_batch, "probes_batch", lambda cfg, device: False)  # the CPU rule
    cpu = fit(data, TrainConfig(epochs_lp=1))
    assert (cpu.cfg.batch_size, cpu.cfg.lr_head) == (512, 1e-3)
    assert probing["steps"] == []


def test_a_resumed_run_keeps_the_batch_its_checkpoint_was_made_with(probing, tmp_path):
    data = _data()
    cfg = TrainConfig(epochs_lp=3)
    reference = fit(data, cfg).predict_logits(data)  # probes 1024

    interrupted_fit(data, cfg, tmp_path, after_epoch=1)
    probing["curve"] = lambda b: b * 1e-7  # this time the probe would keep 512
    resumed = fit(data, cfg, checkpoint_dir=tmp_path)
    assert resumed.cfg.batch_size == 1024
    assert np.array_equal(resumed.predict_logits(data), reference)
