"""SRRS mixup and candidate-label partial-label loss of the screening probe (hand-made cases)."""

import numpy as np
import pytest
import torch

from heads.screen import ScreenConfig, ScreenInputs, run_screening
from heads.screen.lowconf import (
    candidate_rows,
    candidate_targets,
    high_confidence,
    mix_rows,
    mixup_partners,
    partial_label_loss,
)
from heads.screen.partition import AMBIGUOUS
from heads.screen.probe import ProbeConfig, train_probe


def test_mix_rows_exact_for_fixed_lam():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]], np.float32)
    t = np.array([[0.6, 0.4], [1.0, 0.0], [0.0, 1.0]], np.float32)
    mx, mt = mix_rows(x, t, np.array([0]), np.array([1]), 0.25)
    np.testing.assert_allclose(mx, [[0.25, 0.75], [0.0, 1.0], [2.0, 2.0]])
    np.testing.assert_allclose(mt, [[0.9, 0.1], [1.0, 0.0], [0.0, 1.0]])
    assert x[0, 0] == 1.0  # inputs untouched
    tx, tt = mix_rows(torch.from_numpy(x), torch.from_numpy(t), torch.tensor([0]),
                      torch.tensor([1]), torch.tensor([0.25]))  # fmt: skip
    np.testing.assert_allclose(tx.numpy(), mx)
    np.testing.assert_allclose(tt.numpy(), mt)


def test_mixup_partners_same_class_high_confidence():
    targets = np.array(
        [[1, 0, 0], [1, 0, 0], [0.7, 0.3, 0], [0, 1, 0], [0, 0.2, 0.8], [1, 0, 0]], np.float32
    )
    weights = np.array([1, 1, 0.5, 0.5, 1, 0], np.float32)
    np.testing.assert_array_equal(high_confidence(targets, weights), [1, 1, 0, 0, 0, 0])
    partner = mixup_partners(targets, weights, np.random.default_rng(0))
    # row 2 (soft, class 0) -> a clean class-0 row; row 3 (weight 0.5, class 1) and row 4
    # (class 2) have no high-confidence partner; row 5 has weight 0.
    assert partner[2] in (0, 1)
    np.testing.assert_array_equal(partner[[0, 1, 3, 4, 5]], [-1, -1, -1, -1, -1])


def test_candidate_targets_and_rows():
    t = candidate_targets(np.array([0, 1]), np.array([2, 1]), np.array([0, 1]), 3)
    np.testing.assert_allclose(t, [[0.5, 0, 0.5], [0, 1, 0]])
    rows = candidate_rows(torch.tensor([[0.5, 0, 0.5], [0, 1, 0], [0.6, 0.4, 0], [0.0, 0, 0]]))
    np.testing.assert_array_equal(rows.numpy(), [True, False, False, False])


def test_partial_label_loss_hand_computed_and_equals_ce_for_one_label():
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])
    logp = torch.log_softmax(logits, 1)
    p = torch.softmax(logits, 1)
    mask = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    got = partial_label_loss(logp, mask)
    want = torch.stack([-torch.log(p[0, 0] + p[0, 2]), -torch.log(p[1, 1])])
    torch.testing.assert_close(got, want)
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([1, 1]), reduction="none")
    torch.testing.assert_close(partial_label_loss(logp, torch.tensor([[0, 1.0, 0]] * 2)), ce)


def _blobs(seed=0, n=60, k=3, d=8, scale=3.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)).astype(np.float32) * scale
    y = np.arange(n) % k
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


def test_probe_options_change_training_only_where_they_apply():
    x, y = _blobs()
    hard = np.eye(3, dtype=np.float32)[y]
    ones = np.ones(len(y), np.float32)
    base = train_probe(x, hard, ones)
    # All rows one-hot with weight 1: neither option has anything to act on.
    for cfg in (ProbeConfig(mixup_alpha=0.4), ProbeConfig(partial_label=True)):
        np.testing.assert_allclose(train_probe(x, hard, ones, cfg=cfg).weight, base.weight)
    soft = hard.copy()
    soft[:6] = candidate_targets(y[:6], (y[:6] + 1) % 3, y[:6], 3)
    mixed = train_probe(x, soft, ones, cfg=ProbeConfig(mixup_alpha=0.4))
    again = train_probe(x, soft, ones, cfg=ProbeConfig(mixup_alpha=0.4))
    np.testing.assert_array_equal(mixed.weight, again.weight)  # seeded
    assert not np.allclose(mixed.weight, train_probe(x, soft, ones).weight)
    pll = train_probe(x, soft, ones, cfg=ProbeConfig(partial_label=True))
    assert not np.allclose(pll.weight, train_probe(x, soft, ones).weight)
    with pytest.raises(ValueError, match="mixup_alpha"):
        ProbeConfig(mixup_alpha=0.0)


def test_screen_config_flags_set_probe_and_candidate_targets():
    cfg = ScreenConfig(mixup_low_confidence=True, mixup_alpha=0.3, candidate_labels=True)
    assert cfg.probe.mixup_alpha == 0.3 and cfg.probe.partial_label
    assert ScreenConfig().probe.mixup_alpha is None and not ScreenConfig().probe.partial_label
    x, y = _blobs(n=90, scale=1.0)  # overlapping classes: some samples are ambiguous
    y = y.copy()
    y[:20] = (y[:20] + 1) % 3  # 22% flips
    res = run_screening(ScreenInputs(x, y, 3), ScreenConfig(candidate_labels=True, rounds=1))
    amb = np.flatnonzero(res.state == AMBIGUOUS)
    assert len(amb) == 6 and ((res.targets[amb] > 0).sum(1) == 2).all()
    for row in res.targets[amb]:  # uniform over a candidate set that holds the given label
        support = row[row > 0]
        np.testing.assert_allclose(support, 1 / len(support), rtol=1e-6)
    assert all(res.targets[i, y[i]] > 0 for i in amb)
