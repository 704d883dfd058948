"""Sub-means per class (`heads.screen.modes`): the penalised count keeps one mean for a
compact class and finds the sub-types of a multi-modal one; seeded and deterministic."""

import numpy as np
import pytest

from engine.errors import UserError
from heads.screen.mixture_math import MixtureOptions
from heads.screen.modes import choose_modes, class_modes, kmeans, whitener


def _blobs(centres, per=40, dim=64, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    parts = [c + scale * rng.standard_normal((per, dim)) for c in centres]
    return np.concatenate(parts), np.repeat(np.arange(len(centres)), per)


def _count(x, max_modes, penalty):
    return int(choose_modes(x, max_modes, penalty, 0).max()) + 1


def test_one_gaussian_keeps_one_mean_two_sub_types_get_two():
    """Under BIC (penalty 1), in 64 dims: one blob of 120 keeps one mean; two sub-types 8
    noise units apart get two, each holding its own sub-type."""
    one, _ = _blobs([np.zeros(64)], per=120)
    assert _count(one, 4, 1.0) == 1
    apart = 4.0 * np.eye(64)[0]
    two, which = _blobs([-apart, apart], per=60)
    assign = choose_modes(two, 4, 1.0, 0)
    assert (assign == which).all() or (assign == 1 - which).all()


def test_the_penalty_decides_how_far_apart_sub_types_must_be():
    """Sub-types 3 noise units apart: one mean at penalty 2, two at 1 (BIC), and with no
    penalty k-means splits noise too, up to the maximum (why the penalty exists)."""
    near, _ = _blobs([-1.5 * np.eye(64)[0], 1.5 * np.eye(64)[0]], per=60)
    assert [_count(near, 4, p) for p in (2.0, 1.0, 0.0)] == [1, 2, 4]
    assert _count(near, 3, 0.0) == 3


def test_kmeans_is_deterministic_by_seed():
    x, _ = _blobs([np.zeros(8), np.ones(8) * 3, -np.ones(8) * 3], per=30, dim=8)
    a = kmeans(x, 3, np.random.default_rng(7))
    np.testing.assert_array_equal(a, kmeans(x, 3, np.random.default_rng(7)))


def test_whitening_turns_mahalanobis_into_euclidean():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 5))
    precision = a @ a.T + np.eye(5)
    x = rng.standard_normal((3, 5))
    z = x @ whitener(precision)
    d = x[0] - x[1]
    np.testing.assert_allclose(((z[0] - z[1]) ** 2).sum(), d @ precision @ d)


def test_class_modes_needs_min_per_mode_seeds_per_sub_mean():
    """Class 0 (two sub-types, 120 seeds) gets two sub-means at the sub-type centres; class 1
    has the same shape with 12 seeds, under 2 x min_per_mode = 16: one mean. Unused slots
    carry the class mean."""
    dim = 64
    apart = 4.0 * np.eye(dim)[0]
    x0, _ = _blobs([-apart, apart], per=60, scale=0.5)
    x1, _ = _blobs([10 - apart, 10 + apart], per=6, scale=0.5, seed=1)
    x = np.concatenate([x0, x1])
    labels = np.repeat([0, 1], [120, 12])
    means, used, which = class_modes(x, labels, np.ones(len(x), bool), np.eye(dim), num_classes=2,
                              max_modes=3, min_per_mode=8, penalty=1.0, seed=0)  # fmt: skip
    assert used.tolist() == [[True, True, False], [True, False, False]]
    side = (x0[:, 0] > 0).astype(int)  # each of class 0's rows names the sub-mean of its side
    assert (means[0, which[:120], 0] > 0).tolist() == side.astype(bool).tolist()
    assert (which[120:] == 0).all()
    np.testing.assert_allclose(np.sort(means[0, :2, 0]), [-4, 4], atol=0.2)
    np.testing.assert_allclose(means[1, 0], x1.mean(0))


def test_bad_mode_options_are_refused():
    with pytest.raises(ValueError, match="modes"):
        MixtureOptions(modes=0)
    with pytest.raises(UserError, match="mode_penalty"):
        MixtureOptions(mode_penalty=float("nan"))
