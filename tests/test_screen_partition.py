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
    class_percentile_ranks,
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


def test_unanimous_flip_to_a_similar_class_is_caught_by_the_margin():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    consensus = np.tile(np.array([[0.9, 0.1]], np.float32), (8, 1))
    consensus[4:] = [0.1, 0.9]
    consensus[1] = [0.35, 0.65]  # every voter says 1, by 0.3 > 0.1: noisy, and relabeled
    consensus[2] = [0.48, 0.52]  # every voter says 1, but only by 0.04: stays clean
    p_clean = np.ones(8, np.float32)  # the mixture trusts them all
    voters = np.stack([consensus.argmax(1)] * 3)
    cfg = ScreenConfig(min_keep=1, override_margin=0.1, relabel_bar_tail=0.6, relabel_bar_head=0.6)
    part = partition(labels, np.linspace(0, 1, 8), p_clean, consensus, voters, cfg=cfg)
    assert part.state[:4].tolist() == [CLEAN, RELABELED, CLEAN, CLEAN]
    assert part.proposed[1] == 1


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


def test_ranks_within_each_class():
    score = np.array([5.0, 1.0, 3.0, 10.0, 0.0, 7.0])
    labels = np.array([0, 0, 0, 1, 1, 2])
    np.testing.assert_allclose(class_percentile_ranks(score, labels), [1, 0, 0.5, 1, 0, 0.5])
    both = combine_scores({"a": score, "b": -score}, labels)
    np.testing.assert_allclose(both, [0.5] * 6)  # opposite signals cancel within every class


def test_verifier_keeps_only_relabels_its_clean_trained_probe_confirms():
    from heads.screen.partition import Partition
    from heads.screen.probe import ProbeConfig
    from heads.screen.verify import verify_relabels

    rng = np.random.default_rng(0)
    centers = np.eye(2, 8, dtype=np.float32)
    labels = np.repeat([0, 1], 10)
    embed = centers[labels] + 0.05 * rng.standard_normal((20, 8)).astype(np.float32)
    embed /= np.linalg.norm(embed, axis=1, keepdims=True)
    state = np.full(20, CLEAN, np.int8)
    proposed = labels.copy()
    state[[3, 14]] = RELABELED
    proposed[3] = 1  # sits in cluster 0: the verifier says 0, the relabel is refused
    proposed[14] = 0
    embed[14] = centers[0]  # sample 14 (given 1) is in cluster 0: relabel to 0 confirmed
    cfg = ScreenConfig(probe=ProbeConfig(steps=10))
    out = verify_relabels(Partition(state, proposed), embed, labels, num_classes=2, cfg=cfg)
    assert out.state[3] == DROPPED and out.proposed[3] == -1
    assert out.state[14] == RELABELED and out.proposed[14] == 0
    assert (out.state[labels >= 0] != DROPPED).sum() == 19


def test_clean_probe_relabels_flagged_samples_it_and_the_neighbours_agree_on():
    from heads.screen.partition import AMBIGUOUS, OUT_OF_SET, Partition
    from heads.screen.probe import ProbeConfig
    from heads.screen.verify import relabel_by_clean_probe

    rng = np.random.default_rng(0)
    centers = np.eye(2, 8, dtype=np.float32)
    labels = np.repeat([0, 1], 10)
    embed = centers[labels] + 0.05 * rng.standard_normal((20, 8)).astype(np.float32)
    embed[[2, 3, 4, 5]] = centers[1]  # given 0, all sit in cluster 1
    embed /= np.linalg.norm(embed, axis=1, keepdims=True)
    state = np.full(20, CLEAN, np.int8)
    state[[2, 3, 4, 5, 6]] = [DROPPED, DROPPED, OUT_OF_SET, AMBIGUOUS, AMBIGUOUS]
    proposed = np.where(state == CLEAN, labels, -1)
    proposed[[5, 6]] = 0
    knn_choice = np.where(np.arange(20) == 3, 0, 1 - labels)  # 3's neighbours say 0
    knn_choice[[2, 4, 5]] = 1
    cfg = ScreenConfig(probe=ProbeConfig(steps=10), clean_probe_bar=0.5)
    out = relabel_by_clean_probe(Partition(state, proposed), embed, labels, knn_choice,
                                 num_classes=2, cfg=cfg)  # fmt: skip
    # 2 (dropped) and 5 (ambiguous): probe and kNN both say 1 -> relabeled to 1.
    assert out.state[[2, 5]].tolist() == [RELABELED, RELABELED]
    assert out.proposed[[2, 5]].tolist() == [1, 1]
    # 3: kNN disagrees; 4: out-of-set stays out; 6: the probe keeps its given label.
    assert out.state[[3, 4, 6]].tolist() == [DROPPED, OUT_OF_SET, AMBIGUOUS]
    assert out.proposed[[3, 4, 6]].tolist() == [-1, -1, 0]
    assert (out.state == CLEAN).sum() == 15 and (
        out.proposed[state == CLEAN] == labels[state == CLEAN]
    ).all()
    # A bar no softmax over 2 classes reaches moves nothing.
    strict = ScreenConfig(probe=ProbeConfig(steps=10), clean_probe_bar=1.01)
    same = relabel_by_clean_probe(Partition(state, proposed), embed, labels, knn_choice,
                                  num_classes=2, cfg=strict)  # fmt: skip
    np.testing.assert_array_equal(same.state, state)
