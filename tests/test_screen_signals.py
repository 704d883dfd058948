"""Each screening signal on a hand-made case with a known answer."""

import numpy as np
import pytest

from heads.screen import signals
from heads.screen.mixture import clean_posterior
from heads.screen.probe import ProbeConfig, cross_fit_logits, fold_ids, one_hot, probe_train_fn


def unit(rows):
    x = np.asarray(rows, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# Two tight clusters on the x and y axes; sample 3 sits in the x cluster but is labeled 1.
EMBED = unit([[1, 0.01], [1, 0.02], [1, -0.01], [1, 0.0], [0.01, 1], [0.02, 1], [-0.01, 1]])
LABELS = np.array([0, 0, 0, 1, 1, 1, 1])


def test_nearest_neighbours_exact_and_without_self():
    idx, sim = signals.nearest_neighbours(EMBED, k=2)
    assert idx.shape == (7, 2) and not (idx == np.arange(7)[:, None]).any()
    brute = EMBED @ EMBED.T
    np.fill_diagonal(brute, -np.inf)
    np.testing.assert_allclose(sim, -np.sort(-brute, axis=1)[:, :2], atol=1e-6)


def test_torch_fallback_matches_faiss(monkeypatch):
    faiss_idx, _ = signals.nearest_neighbours(EMBED, k=3)
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)  # import faiss -> ImportError
    torch_idx, _ = signals.nearest_neighbours(EMBED, k=3, block=2)
    np.testing.assert_array_equal(np.sort(faiss_idx, 1), np.sort(torch_idx, 1))


def test_knn_votes_flag_the_mislabeled_sample():
    idx, sim = signals.nearest_neighbours(EMBED, k=3)
    votes = signals.knn_label_votes(idx, sim, LABELS, num_classes=2)
    np.testing.assert_allclose(votes.sum(1), 1.0, rtol=1e-6)
    agree = signals.given_label_score(votes, LABELS)
    assert agree[3] < 0.01 and votes[3].argmax() == 0  # its neighbours all say class 0
    assert (np.delete(agree, 3) > 0.6).all()


def test_robust_prototypes_ignore_the_outlier():
    protos = signals.robust_prototypes(EMBED, LABELS, num_classes=3, trim=0.25)
    # Class 1 has 4 members; trimming 1 drops sample 3 (the x-axis one), leaving the y cluster.
    assert protos[1] @ np.array([0, 1]) > 0.999
    np.testing.assert_array_equal(protos[2], 0)  # empty class: zero row
    margin = signals.prototype_margin(EMBED, LABELS, protos[:2])
    assert margin[3] < -0.9 and (np.delete(margin, 3) > 0.9).all()


def test_zero_shot_and_loss():
    text = unit([[1, 0], [0, 1]])
    probs = signals.zero_shot_probs(EMBED, text)
    assert probs.argmax(1).tolist() == [0, 0, 0, 0, 1, 1, 1]
    loss = signals.cross_entropy(probs, LABELS)
    assert loss.argmax() == 3 and loss[3] > 10


def test_inputs_validated():
    with pytest.raises(ValueError, match="labels must lie"):
        signals.robust_prototypes(EMBED, LABELS, num_classes=1)
    with pytest.raises(ValueError, match="0 < k < N"):
        signals.nearest_neighbours(EMBED, k=7)


def test_mixture_separates_two_modes_per_class():
    rng = np.random.default_rng(0)
    score = np.concatenate([rng.normal(0.8, 0.05, 80), rng.normal(0.2, 0.05, 20)])
    labels = np.repeat([0, 1], 50)
    p = clean_posterior(score, labels, num_classes=2)
    assert (p[:80] > 0.9).all() and (p[80:] < 0.1).all()


def test_cross_fitted_probe_is_out_of_fold():
    ids = fold_ids(LABELS, 2, seed=0)
    assert set(np.bincount(ids)) <= {3, 4}
    train = probe_train_fn(EMBED, ProbeConfig(steps=20))
    logits = cross_fit_logits(train, LABELS, one_hot(LABELS, 2), np.ones(7, np.float32),
                              folds=2, seed=0)  # fmt: skip
    assert logits.argmax(1)[3] == 0  # the x-axis sample is scored by a model that never saw it
