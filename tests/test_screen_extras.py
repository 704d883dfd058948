"""Screening extras: each changes the outcome as documented, and only where it applies.

Hand-made cases for the pieces (mixup partners, candidate sets, the partial-label loss,
the verifier, the DFR subset), then each extra end to end through `run_screening`.
"""

import numpy as np
import pytest
import torch

from engine.errors import UserError
from heads.screen import ScreenConfig, ScreenInputs, extras, run_screening
from heads.screen.extras.candidates import (
    candidate_rows,
    candidate_targets,
    partial_label_loss,
    partial_label_rows,
)
from heads.screen.extras.dfr import calibration_subset
from heads.screen.extras.mixup import Mixer, high_confidence, mix_rows, mixup_partners
from heads.screen.extras.verify import verify_relabels
from heads.screen.partition import AMBIGUOUS, CLEAN, DROPPED, RELABELED, Partition
from heads.screen.probe import ProbeConfig, ProbeHooks, train_probe

FAST = ProbeConfig(steps=10)
MIX = ProbeHooks(mix=lambda t, w, seed: Mixer(t, w, 0.4, seed))
PLL = ProbeHooks(loss=partial_label_rows)


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
    t = candidate_targets(np.array([0, 1]), [np.array([2, 1]), np.array([0, 1])], 3)
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


def test_probe_hooks_change_training_only_where_they_apply():
    x, y = _blobs()
    hard = np.eye(3, dtype=np.float32)[y]
    ones = np.ones(len(y), np.float32)
    base = train_probe(x, hard, ones)
    # All rows one-hot with weight 1: neither hook has anything to act on.
    for hooks in (MIX, PLL):
        np.testing.assert_allclose(train_probe(x, hard, ones, hooks=hooks).weight, base.weight)
    soft = hard.copy()
    soft[:6] = candidate_targets(y[:6], [(y[:6] + 1) % 3, y[:6]], 3)
    mixed = train_probe(x, soft, ones, hooks=MIX)
    again = train_probe(x, soft, ones, hooks=MIX)
    np.testing.assert_array_equal(mixed.weight, again.weight)  # seeded
    assert not np.allclose(mixed.weight, train_probe(x, soft, ones).weight)
    pll = train_probe(x, soft, ones, hooks=PLL)
    assert not np.allclose(pll.weight, train_probe(x, soft, ones).weight)


def test_registry_lists_the_four_extras_and_refuses_unknown_or_repeated_names():
    """The folder-mixture stage left the extras for the core (ScreenConfig.mixture)."""
    assert extras.available() == [
        "candidate-labels",
        "dfr",
        "srrs-mixup",
        "srrs-verify",
    ]
    assert ScreenConfig(extras=["dfr"]).extras == ("dfr",)  # JSON lists come back as tuples
    with pytest.raises(UserError, match=r"unknown screening extra 'dfrr'; choose one of \["):
        ScreenConfig(extras=("dfrr",))
    with pytest.raises(UserError, match="named twice"):
        ScreenConfig(extras=("dfr", "dfr"))
    # A config written before the stage moved into the core is told where it went.
    with pytest.raises(UserError, match="'folder-mixture' is gone: .* on by default"):
        ScreenConfig(extras=("folder-mixture",))
    with pytest.raises(ValueError, match="alpha"):
        extras.EXTRAS.get("srrs-mixup").Config(alpha=0.0)


def _noisy(n=90, flips=20):
    x, y = _blobs(n=n, scale=1.0)  # overlapping classes: some samples are ambiguous
    y = y.copy()
    y[:flips] = (y[:flips] + 1) % 3
    return ScreenInputs(x, y, 3)


def _screen(inputs, *names, rounds=1):
    """Screening with the named extras and without the relabeling stage (each extra alone)."""
    cfg = ScreenConfig(rounds=rounds, probe=FAST, extras=names, mixture=None)
    return run_screening(inputs, cfg)


def test_candidate_labels_extra_gives_ambiguous_samples_uniform_candidate_sets():
    inputs = _noisy()
    res = _screen(inputs, "candidate-labels")
    base = _screen(inputs)
    amb = np.flatnonzero(res.state == AMBIGUOUS)
    assert ((res.targets[amb] > 0).sum(1) >= 2).any()  # some candidate sets hold 2+ classes
    for row in res.targets[amb]:  # uniform over a candidate set that holds the given label
        support = row[row > 0]
        np.testing.assert_allclose(support, 1 / len(support), rtol=1e-6)
    assert all(res.targets[i, inputs.labels[i]] > 0 for i in amb)
    # Only ambiguous rows' targets differ from the core's (same states in round 0).
    r0 = run_screening(
        inputs, ScreenConfig(rounds=0, probe=FAST, extras=("candidate-labels",), mixture=None)
    )
    b0 = run_screening(inputs, ScreenConfig(rounds=0, probe=FAST, mixture=None))
    np.testing.assert_array_equal(r0.state, b0.state)
    other = r0.state != AMBIGUOUS
    np.testing.assert_array_equal(r0.targets[other], b0.targets[other])
    assert not np.array_equal(res.targets, base.targets)


def test_srrs_mixup_extra_changes_the_screening_probe_and_is_seeded():
    inputs = _noisy()
    on, again, off = _screen(inputs, "srrs-mixup"), _screen(inputs, "srrs-mixup"), _screen(inputs)
    np.testing.assert_array_equal(on.combined, again.combined)
    # Round 0 trains on one-hot targets, where mixup has nothing to mix; round 1's student
    # sees soft targets and weights, so its scores move.
    assert not np.array_equal(on.combined, off.combined)


def test_srrs_verify_extra_only_turns_relabels_into_drops():
    inputs = _noisy(flips=25)
    cfg = ScreenConfig(rounds=0, probe=FAST, relabel_bar_tail=0.3, relabel_bar_head=0.3)
    off = run_screening(inputs, cfg)
    on = run_screening(inputs, ScreenConfig(**{**vars(cfg), "extras": ("srrs-verify",)}))
    changed = np.flatnonzero(on.state != off.state)
    assert (off.state == RELABELED).any()
    assert ((off.state[changed] == RELABELED) & (on.state[changed] == DROPPED)).all()


def test_dfr_extra_trains_the_final_model_on_a_balanced_trusted_subset():
    inputs = _noisy()
    off, on = _screen(inputs), _screen(inputs, "dfr")
    np.testing.assert_array_equal(on.state, off.state)  # states and targets stay
    np.testing.assert_array_equal(on.targets, off.targets)
    want = calibration_subset(off.state, off.p_clean, inputs.labels, num_classes=3)
    np.testing.assert_array_equal(np.flatnonzero(on.weights), want)
    assert (on.weights[want] == 1).all() and (off.state[want] == CLEAN).all()
    clean = np.bincount(inputs.labels[off.state == CLEAN], minlength=3)
    per_class = int(np.median(clean[clean > 0]))  # balanced: the median clean count each
    got = np.bincount(inputs.labels[want], minlength=3)
    np.testing.assert_array_equal(got, np.minimum(clean, per_class))
    # It really runs into a different final model: a probe on the DFR weights differs.
    kept = off.weights > 0
    a = train_probe(inputs.embed[kept], off.targets[kept], off.weights[kept], cfg=FAST)
    b = train_probe(inputs.embed[want], on.targets[want], on.weights[want], cfg=FAST)
    assert not np.allclose(a.weight, b.weight)


def test_verifier_keeps_only_relabels_its_clean_trained_probe_confirms():
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
    cfg = ScreenConfig(probe=FAST)
    out = verify_relabels(Partition(state, proposed), embed, labels, num_classes=2, cfg=cfg)
    assert out.state[3] == DROPPED and out.proposed[3] == -1
    assert out.state[14] == RELABELED and out.proposed[14] == 0
    assert (out.state[labels >= 0] != DROPPED).sum() == 19


def test_calibration_subset_is_balanced_and_most_trusted():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    state = np.full(9, CLEAN, np.int8)
    state[3] = AMBIGUOUS  # never eligible
    p_clean = np.array([0.5, 0.9, 0.7, 1.0, 0.2, 0.8, 0.6, 0.9, 0.95], np.float32)
    # clean counts 3, 2, 3 -> median 3: class 1 gives both, the others their 3 best
    rows = calibration_subset(state, p_clean, labels, num_classes=3)
    assert rows.tolist() == [0, 1, 2, 4, 5, 6, 7, 8]
    rows = calibration_subset(state, p_clean, labels, num_classes=3, per_class=1)
    assert rows.tolist() == [1, 5, 8]


def test_core_has_at_most_25_knobs_and_round_trips_through_json():
    import json
    from dataclasses import fields

    # 26: the relabeling stage (issue 18) is one knob, `mixture`, its settings nested in
    # FolderMixtureConfig (None switches it off).
    assert len(fields(ScreenConfig)) + len(fields(ProbeConfig)) <= 26
    cfg = ScreenConfig(rounds=1, extras=("dfr", "srrs-mixup"), probe=ProbeConfig(steps=7))
    back = ScreenConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.extras == ("dfr", "srrs-mixup") and back.probe.steps == 7
    with pytest.raises(
        UserError, match=r"unknown key\(s\) rank_within_class in config section 'screen'"
    ):
        ScreenConfig.from_dict({"rank_within_class": True})
    with pytest.raises(UserError, match=r"unknown key\(s\) gce_q in config section 'screen.probe'"):
        ScreenConfig.from_dict({"probe": {"gce_q": 0.7}})
