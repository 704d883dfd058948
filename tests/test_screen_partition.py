"""Partition rules and tail protection on hand-made inputs."""

import numpy as np

from heads.screen.config import ScreenConfig
from heads.screen.partition import (
    AMBIGUOUS,
    CLEAN,
    DROPPED,
    OUT_OF_SET,
    RELABELED,
    build_targets,
    combine_scores,
    partition,
    relabel_bars,
)


def case(n_per_class=(3, 10), p_clean=None, consensus=None):
    labels = np.repeat(np.arange(len(n_per_class)), n_per_class)
    n, k = len(labels), 3
    combined = np.linspace(0, 1, n).astype(np.float32)
    p_clean = np.zeros(n, np.float32) if p_clean is None else p_clean
    if consensus is None:
        consensus = np.full((n, k), 1 / k, np.float32)
    return labels, combined, p_clean, consensus


def test_a_class_of_three_is_never_emptied():
    labels, combined, p_clean, consensus = case()
    cfg = ScreenConfig(min_keep=1, max_noisy_share=1.0)
    part = partition(labels, combined, p_clean, consensus, labels[None, :], cfg=cfg)
    for c in (0, 1):
        kept = (part.state[labels == c] <= AMBIGUOUS).sum()
        assert kept >= 1
    # the most trusted sample of each class (highest combined) is the one kept clean
    assert part.state[2] == CLEAN and part.state[12] == CLEAN


def test_noisy_share_is_capped_and_min_keep_holds():
    labels, combined, p_clean, consensus = case(n_per_class=(3, 10))
    cfg = ScreenConfig(min_keep=2, max_noisy_share=0.5)
    part = partition(labels, combined, p_clean, consensus, labels[None, :], cfg=cfg)
    big = part.state[labels == 1]
    assert (big >= RELABELED).sum() == 5  # cap: floor(0.5 * 10)
    assert (big[-2:] == CLEAN).all()  # the 2 most trusted
    assert (big[:5] >= RELABELED).all()  # the least trusted stay removed
    small = part.state[labels == 0]
    assert (small >= RELABELED).sum() == 1 and (small[1:] == CLEAN).all()


def test_relabel_needs_agreement_and_a_stricter_bar_into_head_classes():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    n = len(labels)
    consensus = np.zeros((n, 3), np.float32)
    consensus[0] = [0.0, 0.6, 0.4]  # to class 1 (medium): bar 0.6 -> relabeled
    consensus[1] = [0.0, 0.4, 0.6]  # to class 2 (tail): bar 0.5 -> relabeled
    consensus[2] = [0.3, 0.1, 0.6]  # voters disagree below -> dropped
    consensus[3] = [0.1, 0.1, 0.1]  # nothing explains it -> out of set
    consensus[4:] = [1.0, 0.0, 0.0]
    consensus[9] = [0.0, 0.0, 1.0]
    p_clean = np.ones(n, np.float32)
    p_clean[:4] = 0.0
    voters = np.stack([consensus.argmax(1)] * 2)
    voters[1, 2] = 1
    cfg = ScreenConfig(min_keep=1, max_noisy_share=1.0, relabel_bar_tail=0.5,
                       relabel_bar_head=0.7, soft_relabel=False)  # fmt: skip
    bars = relabel_bars(np.bincount(labels), cfg)
    np.testing.assert_allclose(bars, [0.7, 0.6, 0.5])
    part = partition(labels, np.linspace(0, 1, n), p_clean, consensus, voters, cfg=cfg)
    assert part.state[:4].tolist() == [RELABELED, RELABELED, DROPPED, OUT_OF_SET]
    assert part.proposed[:4].tolist() == [1, 2, -1, -1]
    targets, weights = build_targets(labels, part, p_clean, consensus, cfg=cfg)
    assert targets[0].tolist() == [0, 1, 0] and weights[:4].tolist() == [1, 1, 0, 0]


def test_ambiguous_get_soft_targets_and_reduced_weight():
    labels = np.array([0, 0, 0, 1, 1, 1])
    consensus = np.tile(np.array([[0.2, 0.8]], np.float32), (6, 1))
    p_clean = np.array([0.5, 1, 1, 1, 1, 1], np.float32)
    cfg = ScreenConfig(min_keep=1)
    part = partition(labels, np.linspace(0, 1, 6), p_clean, consensus, labels[None, :], cfg=cfg)
    assert part.state[0] == AMBIGUOUS
    targets, weights = build_targets(labels, part, p_clean, consensus, cfg=cfg)
    np.testing.assert_allclose(targets[0], [0.5 + 0.5 * 0.2, 0.5 * 0.8])
    assert weights[0] == cfg.ambiguous_weight and weights[1] == 1.0


def test_soft_relabel_turns_dropped_samples_into_weighted_consensus_targets():
    labels = np.array([0, 0, 0, 1, 1, 2])
    consensus = np.tile(np.array([[0.6, 0.2, 0.2]], np.float32), (6, 1))
    consensus[0] = [0.4, 0.45, 0.15]  # noisy, voters disagree: dropped
    p_clean = np.ones(6, np.float32)
    p_clean[0] = 0.0
    voters = np.stack([np.array([1, 0, 0, 1, 1, 2]), labels])
    on = ScreenConfig(min_keep=1, soft_relabel=True, out_of_set_bar=0.1)
    part = partition(labels, np.linspace(0, 1, 6), p_clean, consensus, voters, cfg=on)
    assert part.state[0] == DROPPED
    targets, weights = build_targets(labels, part, p_clean, consensus, cfg=on)
    np.testing.assert_allclose(targets[0], [0.0, 0.75, 0.25])  # given class removed, renormalised
    assert np.isclose(weights[0], 0.75)
    off = ScreenConfig(min_keep=1, soft_relabel=False, out_of_set_bar=0.1)
    assert build_targets(labels, part, p_clean, consensus, cfg=off)[1][0] == 0.0


def test_combine_scores_is_the_mean_percentile_rank():
    score = np.array([5.0, 1.0, 3.0, 10.0, 0.0, 7.0])
    both = combine_scores({"a": score, "b": -score})
    np.testing.assert_allclose(both, [0.5] * 6)  # opposite signals cancel
    np.testing.assert_allclose(combine_scores({"a": score}), [0.6, 0.2, 0.4, 1.0, 0.0, 0.8])
