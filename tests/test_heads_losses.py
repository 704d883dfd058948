"""Losses against hand computations and torch's reference; L2-SP and WiSE-FT end points."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from engine.errors import UserError
from heads.losses import (
    adjust_logits,
    l2sp_penalty,
    list_losses,
    log_class_prior,
    make_loss,
    weighted_loss,
    wise_ft,
)

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
HARD = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def _softmax_row(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_ce_matches_torch_cross_entropy():
    per = make_loss("ce")(LOGITS, HARD)
    ref = F.cross_entropy(LOGITS, torch.tensor([0, 2]), reduction="none")
    torch.testing.assert_close(per, ref)
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.2, 0.2, 0.6]])
    torch.testing.assert_close(
        make_loss("ce")(LOGITS, soft), F.cross_entropy(LOGITS, soft, reduction="none")
    )


def test_gce_by_hand():
    q = 0.5
    p = [_softmax_row(r) for r in LOGITS.tolist()]
    expected = torch.tensor([(1 - p[0][0] ** q) / q, (1 - p[1][2] ** q) / q])
    torch.testing.assert_close(make_loss("gce", q=q)(LOGITS, HARD), expected)


def test_sce_by_hand():
    alpha, beta = 0.3, 2.0
    p = [_softmax_row(r) for r in LOGITS.tolist()]
    log_a = math.log(1e-4)
    # one-hot target: RCE = -(sum over the wrong classes of p_k) * log(1e-4)
    ce = [-math.log(p[0][0]), -math.log(p[1][2])]
    rce = [-(p[0][1] + p[0][2]) * log_a, -(p[1][0] + p[1][1]) * log_a]
    expected = torch.tensor([alpha * c + beta * r for c, r in zip(ce, rce, strict=True)])
    torch.testing.assert_close(make_loss("sce", alpha=alpha, beta=beta)(LOGITS, HARD), expected)


def test_weighted_mean_and_zero_weight():
    ce = make_loss("ce")
    per = ce(LOGITS, HARD)
    w = torch.tensor([3.0, 1.0])
    zero = torch.zeros(3)
    got = weighted_loss(ce, LOGITS, HARD, w, zero, tau=0.0)
    torch.testing.assert_close(got, (3 * per[0] + per[1]) / 4)
    only_first = weighted_loss(ce, LOGITS, HARD, torch.tensor([1.0, 0.0]), zero, tau=0.0)
    torch.testing.assert_close(only_first, per[0])


def test_logit_adjustment_is_the_formula():
    prior = torch.tensor([0.7, 0.2, 0.1])
    tau = 1.5
    adjusted = adjust_logits(LOGITS, prior.log(), tau)
    torch.testing.assert_close(adjusted, LOGITS + tau * prior.log())
    # the adjusted loss is CE on those logits (Menon et al. eq. 10)
    ce = make_loss("ce")
    got = weighted_loss(ce, LOGITS, HARD, torch.ones(2), prior.log(), tau)
    ref = F.cross_entropy(LOGITS + tau * prior.log(), torch.tensor([0, 2]))
    torch.testing.assert_close(got, ref)
    # argmax shifts exactly where the adjustment overturns the margin: row 1 is 1.5 vs 0.5
    # raw (class 1), adjusted 1.5 + 1.5 log .2 = -0.914 vs 0.5 + 1.5 log .7 = -0.035 (class 0)
    assert adjusted.argmax(1).tolist() == [0, 0]
    assert adjust_logits(LOGITS, prior.log(), 0.0) is LOGITS


def test_log_class_prior_counts_weighted_targets():
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.5, 0.5]])
    weights = torch.tensor([1.0, 1.0, 2.0])
    # counts 3 and 1, plus one each: 4/6 and 2/6
    torch.testing.assert_close(
        log_class_prior(targets, weights).exp(), torch.tensor([4 / 6, 2 / 6])
    )


def test_factory_names_valid_choices():
    assert list_losses() == ["ce", "gce", "sce"]
    with pytest.raises(UserError, match=r"unknown loss 'focal'.*\['ce', 'gce', 'sce'\]"):
        make_loss("focal")


def test_l2sp_zero_at_init_and_value():
    params = [torch.randn(3, 4), torch.randn(5)]
    anchors = [p.clone() for p in params]
    assert l2sp_penalty(params, anchors, 0.1).item() == 0.0
    moved = [params[0] + 1.0, params[1]]
    torch.testing.assert_close(l2sp_penalty(moved, anchors, 0.1), torch.tensor(0.5 * 0.1 * 12))


def test_wise_ft_end_points_exact():
    pre = {"w": torch.randn(4, 4), "b": torch.randn(4), "n": torch.tensor(3)}
    fin = {"w": torch.randn(4, 4), "b": torch.randn(4), "n": torch.tensor(3)}
    zero = wise_ft(pre, fin, 0.0)
    one = wise_ft(pre, fin, 1.0)
    for name in pre:
        assert torch.equal(zero[name], pre[name])
        assert torch.equal(one[name], fin[name])
    torch.testing.assert_close(wise_ft(pre, fin, 0.5)["w"], (pre["w"] + fin["w"]) / 2)
