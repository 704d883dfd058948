"""The simulated noisy feature sets: shapes, exact noise share, determinism."""

import numpy as np

from bench.synthetic import long_tail_counts, make_noisy_features


def test_long_tail_counts_span_the_imbalance():
    counts = long_tail_counts(5, 100, 100.0)
    assert counts.tolist() == [100, 32, 10, 3, 2]  # 1/100 rounds to 1, floored at 2


def test_noise_share_kinds_and_norms():
    d = make_noisy_features(
        num_classes=30, dim=16, imbalance=10, max_per_class=40, noise=0.4, seed=3
    )
    assert np.isclose(d.is_noisy.mean(), 0.4, atol=1 / len(d.labels))
    assert ((d.true_labels == -1) == (d.noise_kind == 3)).all()
    assert (d.is_noisy == (d.noise_kind > 0)).all()
    same_genus = d.genus[d.labels[d.noise_kind == 2]] == d.genus[d.true_labels[d.noise_kind == 2]]
    assert same_genus.all()
    np.testing.assert_allclose(np.linalg.norm(d.embed, axis=1), 1.0, atol=1e-5)
    assert np.bincount(d.test_labels).tolist() == [20] * 30
    assert d.text_embed.shape == (30, 16)


def test_same_seed_same_data():
    a = make_noisy_features(num_classes=10, dim=8, seed=1)
    b = make_noisy_features(num_classes=10, dim=8, seed=1)
    c = make_noisy_features(num_classes=10, dim=8, seed=2)
    np.testing.assert_array_equal(a.embed, b.embed)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.embed, c.embed)


def test_clip_like_cone_and_class_geometry():
    d = make_noisy_features(num_classes=40, dim=64, imbalance=1, max_per_class=30, noise=0.0,
                            cone=0.45, seed=0)  # fmt: skip
    sims = d.embed @ d.embed.T
    same = d.labels[:, None] == d.labels[None, :]
    sibling = (d.genus[d.labels][:, None] == d.genus[d.labels][None, :]) & ~same
    unrelated = ~same & ~sibling
    # Unrelated images share CLIP's cone (mean cosine ~0.45); siblings are closer; own class closest.
    assert abs(sims[unrelated].mean() - 0.45) < 0.05
    assert (
        sims[unrelated].mean()
        < sims[sibling].mean()
        < sims[same & ~np.eye(len(sims), dtype=bool)].mean()
    )


def test_size_flip_prior_sends_flips_to_big_folders():
    kw = dict(num_classes=40, dim=16, imbalance=20, max_per_class=200, noise=0.4, seed=0)
    counts = np.bincount(make_noisy_features(**kw).labels, minlength=40)
    share = {}
    for prior in ("uniform", "size"):
        d = make_noisy_features(**kw, flip_prior=prior)
        flipped = d.true_labels[(d.noise_kind == 1) | (d.noise_kind == 2)]
        big = counts >= np.median(counts)
        share[prior] = np.isin(flipped, np.flatnonzero(big)).mean()
        same_genus = (
            d.genus[d.labels[d.noise_kind == 2]] == d.genus[d.true_labels[d.noise_kind == 2]]
        )
        assert same_genus.all()
    # Uniform: big folders get about half the flipped images; by size: most of them.
    assert abs(share["uniform"] - 0.5) < 0.1
    assert share["size"] > 0.7


def test_unknown_flip_prior_is_refused():
    import pytest

    with pytest.raises(ValueError, match="flip_prior"):
        make_noisy_features(num_classes=10, dim=8, flip_prior="popular")


def test_realistic_variant_breaks_one_shared_gaussian_and_leaves_plain_alone():
    """Realism(): per-class spread differs (difficulty), the radius is heavy-tailed, and the
    labels, noise and test labels are the plain variant's (only the geometry changes)."""
    from bench.synthetic import Realism

    kw = dict(num_classes=20, dim=32, imbalance=1, max_per_class=60, noise=0.0, seed=4)
    plain, real = make_noisy_features(**kw), make_noisy_features(**kw, realism=Realism())
    assert np.array_equal(plain.labels, real.labels) and not np.allclose(plain.embed, real.embed)

    def spreads(d):
        centred = d.embed - d.embed.mean(0)
        dist = [np.linalg.norm(centred[d.labels == c] - centred[d.labels == c].mean(0), axis=1)
                for c in range(20)]  # fmt: skip
        per_class = np.array([x.mean() for x in dist])
        radius = np.concatenate([x / x.mean() for x in dist])
        return per_class.std() / per_class.mean(), np.percentile(radius, 99)

    (cv_plain, tail_plain), (cv_real, tail_real) = spreads(plain), spreads(real)
    assert cv_real > 2 * cv_plain  # class-dependent difficulty
    assert tail_real > tail_plain + 0.2  # heavy-tailed scatter
    np.testing.assert_allclose(np.linalg.norm(real.embed, axis=1), 1.0, atol=1e-5)
