"""Each screening signal on a hand-made case with a known answer."""

import numpy as np
import pytest
import torch

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


@pytest.mark.gpu
def test_cuda_search_matches_faiss():
    faiss_idx, faiss_sim = signals.nearest_neighbours(EMBED, k=3, device="cpu")
    cuda_idx, cuda_sim = signals.nearest_neighbours(EMBED, k=3, block=2, device="cuda")
    np.testing.assert_array_equal(np.sort(faiss_idx, 1), np.sort(cuda_idx, 1))
    np.testing.assert_allclose(cuda_sim, faiss_sim, atol=1e-3)  # TF32 products on the GPU


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
    margin, nearest = signals.prototype_scores(EMBED, LABELS, protos[:2])
    assert margin[3] < -0.9 and (np.delete(margin, 3) > 0.9).all()
    assert nearest.tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_prototypes_are_trimmed_class_means():
    """Exact values against a NumPy reference: mean of the (1 - trim) most central members."""
    rng = np.random.default_rng(1)
    x = unit(rng.standard_normal((40, 6)))
    y = rng.integers(0, 5, 40)
    got = signals.robust_prototypes(x, y, num_classes=5, trim=0.5)
    for c in range(5):
        members = x[y == c]
        first = members.sum(0) / np.linalg.norm(members.sum(0))
        central = members[np.argsort(-(members @ first))[: int(np.ceil(len(members) / 2))]]
        np.testing.assert_allclose(got[c], unit(central.sum(0, keepdims=True))[0], atol=1e-6)


@pytest.mark.gpu
def test_signals_on_cuda_match_the_cpu():
    rng = np.random.default_rng(2)
    x = unit(rng.standard_normal((3000, 16)))
    y = rng.integers(0, 30, 3000)
    text = unit(rng.standard_normal((30, 16)))
    idx, sim = signals.nearest_neighbours(x, k=5, device="cpu")
    for name, fn in {
        "votes": lambda d: signals.knn_label_votes(idx, sim, y, num_classes=30, device=d),
        "protos": lambda d: signals.robust_prototypes(x, y, num_classes=30, device=d),
        "zero_shot": lambda d: signals.zero_shot_probs(x, text, device=d),
    }.items():
        np.testing.assert_allclose(fn("cuda"), fn("cpu"), atol=1e-3, err_msg=name)
    protos = signals.robust_prototypes(x, y, num_classes=30, device="cpu")
    cpu, gpu = (signals.prototype_scores(x, y, protos, device=d) for d in ("cpu", "cuda"))
    np.testing.assert_allclose(gpu[0], cpu[0], atol=1e-3)
    assert (gpu[1] == cpu[1]).mean() > 0.99  # near-ties may flip under TF32


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


def test_probe_starts_as_the_nearest_class_mean():
    """Zero steps: weights are INIT_SCALE x unit class means of the centred features."""
    from heads.screen.probe import INIT_SCALE, train_probe

    rng = np.random.default_rng(3)
    x = unit(rng.standard_normal((30, 5)))
    y = np.arange(30) % 3
    w = rng.random(30).astype(np.float32)
    probe = train_probe(x, one_hot(y, 3), w, cfg=ProbeConfig(steps=0))
    centred = unit(x - x.mean(0))
    want = np.stack([(centred[y == c] * w[y == c, None]).sum(0) for c in range(3)])
    np.testing.assert_allclose(probe.weight, INIT_SCALE * unit(want), atol=1e-4)
    np.testing.assert_allclose(probe.predict_logits(x), centred @ probe.weight.T, atol=1e-5)


def _mixup_hooks():
    from heads.screen.extras.mixup import Mixer
    from heads.screen.probe import ProbeHooks

    return ProbeHooks(mix=lambda t, w, seed: Mixer(t, w, 0.4, seed))


@pytest.mark.parametrize("mixup", [False, True])
def test_probe_train_fn_scores_like_the_probe(mixup):
    """The train_fn gathers rows with torch on the device; the probe on NumPy rows agrees."""
    from heads.screen.probe import train_probe

    rng = np.random.default_rng(4)
    x = unit(rng.standard_normal((50, 5)))
    t, w = one_hot(rng.integers(0, 4, 50), 4) * 0.9 + 0.025, np.ones(50, np.float32)
    w[:5] = 0  # zero-weight rows are left out of training
    train, held = np.arange(40), np.arange(40, 50)
    cfg, hooks = ProbeConfig(steps=5), _mixup_hooks() if mixup else None
    predict = probe_train_fn(x, cfg, hooks=hooks)(train, t, w)
    probe = train_probe(x[5:40], t[5:40], w[5:40], cfg=cfg, hooks=hooks)
    np.testing.assert_allclose(predict(held), probe.predict_logits(x[held]), atol=1e-6)


def test_cross_fitted_probe_is_out_of_fold():
    ids = fold_ids(LABELS, 2, seed=0)
    assert set(np.bincount(ids)) <= {3, 4}
    train = probe_train_fn(EMBED, ProbeConfig(steps=20))
    logits = cross_fit_logits(train, LABELS, one_hot(LABELS, 2), np.ones(7, np.float32),
                              folds=2, seed=0)  # fmt: skip
    assert logits.argmax(1)[3] == 0  # the x-axis sample is scored by a model that never saw it


def test_probe_ignores_a_shared_offset():
    # CLIP-like cone: the same clusters shifted far along a shared direction.
    from heads.screen.probe import center_features, train_probe

    offset = unit([[0.0, 0.0, 1.0]]) * 3
    coned = unit(np.hstack([EMBED, np.zeros((7, 1), np.float32)]) + offset)
    np.testing.assert_allclose(
        torch.linalg.norm(center_features(*map(torch.from_numpy, (coned, coned.mean(0)))), dim=1),
        1,
        rtol=1e-6,
    )
    probe = train_probe(coned[:3].tolist() + coned[4:].tolist(), one_hot(np.array([0, 0, 0, 1, 1, 1]), 2),
                        np.ones(6, np.float32), cfg=ProbeConfig(steps=10))  # fmt: skip
    assert probe.predict_logits(coned).argmax(1).tolist() == [0, 0, 0, 0, 1, 1, 1]


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["full", "minibatch", "mixup"])
def test_probe_on_cuda_matches_the_cpu(variant, monkeypatch):
    """Same batches (CPU-drawn order and mixup) on both devices: the same weights, to TF32."""
    from heads.screen import probe as probe_module
    from heads.screen.probe import train_probe

    if variant == "minibatch":
        monkeypatch.setattr(probe_module, "BATCH_ROWS", 3)
    hooks = _mixup_hooks() if variant == "mixup" else None

    rng = np.random.default_rng(0)
    x = unit(rng.standard_normal((64, 8)).astype(np.float32))
    y = rng.integers(0, 4, 64)
    soft = one_hot(y, 4) * 0.8 + 0.05  # soft rows: mixup has low-confidence samples to mix
    args = (x, soft, np.ones(64, np.float32))
    cfg = ProbeConfig(steps=10)
    cpu = train_probe(*args, cfg=cfg, device="cpu", hooks=hooks)
    gpu = train_probe(*args, cfg=cfg, device="cuda", hooks=hooks)
    np.testing.assert_allclose(gpu.weight, cpu.weight, atol=2e-3)
    np.testing.assert_allclose(gpu.predict_logits(x), cpu.predict_logits(x), atol=2e-2)


def test_fit_temperature_recovers_the_generating_one():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4000, 5)).astype(np.float32)
    probs = signals.softmax(logits, temperature=0.5)
    labels = (probs.cumsum(1) > rng.random((4000, 1))).argmax(1)  # drawn from softmax(l / 0.5)
    grid = (0.1, 0.25, 0.5, 1.0, 2.0)
    assert signals.fit_temperature(logits, labels, grid=grid) == 0.5


def test_mixture_finds_a_thin_noisy_tail_without_splitting_the_clean_bulk():
    # 10% noise, balanced: an even-split start used to cut the clean bulk in two.
    rng = np.random.default_rng(1)
    score = np.concatenate([rng.uniform(0.3, 0.9, 900), rng.normal(0.08, 0.02, 100)])
    labels = np.tile(np.arange(10), 100)
    p = clean_posterior(score, labels, num_classes=10)
    assert (p[:900] >= 0.5).mean() > 0.97 and (p[900:] < 0.5).all()


def test_blocked_passes_give_the_same_floats_as_the_plain_numpy():
    """softmax and the consensus mean over many row blocks against the one-pass NumPy they
    replace (bit for bit), and the torch kNN votes against np.add.at by hand."""
    from heads.screen.rounds import _mean_of

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((9000, 37)).astype(np.float32) * 5  # 3 blocks of 4096
    z = logits / 0.3
    z = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_array_equal(
        signals.softmax(logits, temperature=0.3), z / z.sum(1, keepdims=True)
    )
    labels = rng.integers(0, 37, 9000)
    nbr = rng.integers(0, 9000, (9000, 6))  # repeated labels among a row's neighbours
    sim = -np.sort(-rng.random((9000, 6)).astype(np.float32), axis=1)
    want = np.zeros((9000, 37), np.float32)
    w = np.exp((sim - sim[:, :1]) / 0.05)
    np.add.at(want, (np.repeat(np.arange(9000), 6), labels[nbr].ravel()), w.ravel())
    got = signals.knn_label_votes(nbr, sim, labels, num_classes=37)
    np.testing.assert_allclose(got, want / want.sum(1, keepdims=True), rtol=1e-6, atol=1e-7)
    parts = [signals.softmax(rng.standard_normal((50, 4)).astype(np.float32)) for _ in range(3)]
    np.testing.assert_array_equal(_mean_of(*parts), np.mean(parts, axis=0))


def test_row_block_errors_reach_the_caller():
    def fail(rows):
        raise RuntimeError(f"bad block {rows.start}")

    with pytest.raises(RuntimeError, match="bad block"):
        signals.for_row_blocks(fail, 10)


def _textbook_clean_posterior(x, labels, num_classes, strength=20.0, iters=30):
    """The (N, 2)-responsibility EM that `heads.screen.mixture` replaced, as a reference."""

    def post(x, mean, var, mix):
        logp = -0.5 * (x[:, None] - mean) ** 2 / var - 0.5 * np.log(var) + np.log(mix)
        p = np.exp(logp - logp.max(axis=1, keepdims=True))
        return p[:, 1] / p.sum(axis=1)

    def per_class(values):
        return np.stack(
            [np.bincount(labels, weights=v, minlength=num_classes) for v in values.T], 1
        )

    mean, var, mix = (
        np.quantile(x, [0.05, 0.6]),
        np.full(2, max(x.var() / 4, 1e-4)),
        np.array([0.1, 0.9]),
    )
    for _ in range(100):
        resp = np.stack([1 - post(x, mean, var, mix), post(x, mean, var, mix)], axis=1)
        mass = resp.sum(0) + 1e-9
        mean = (resp * x[:, None]).sum(0) / mass
        var = np.maximum((resp * (x[:, None] - mean) ** 2).sum(0) / mass, 1e-4)
        mix = mass / mass.sum()
    p_mean, p_var, p_mix = (a[np.argsort(mean)] for a in (mean, var, mix))
    mean, var, mix = (np.tile(a, (num_classes, 1)) for a in (p_mean, p_var, p_mix))
    for _ in range(iters):
        r1 = post(x, mean[labels], var[labels], mix[labels])
        resp = np.stack([1 - r1, r1], axis=1)
        mass = per_class(resp)
        mean = (per_class(resp * x[:, None]) + strength * p_mix * p_mean) / (
            mass + strength * p_mix
        )
        sxx = per_class(resp * (x[:, None] - mean[labels]) ** 2)
        var = np.maximum((sxx + strength * p_mix * p_var) / (mass + strength * p_mix), 1e-4)
        mix = (mass + strength * p_mix) / (mass.sum(1, keepdims=True) + strength)
    swap = mean[:, 0] > mean[:, 1]
    mean[swap], var[swap], mix[swap] = mean[swap, ::-1], var[swap, ::-1], mix[swap, ::-1]
    return post(x, mean[labels], var[labels], mix[labels])


def test_mixture_matches_the_textbook_em():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 40, 5000)
    noisy = rng.random(5000) < 0.1 + 0.5 * (labels % 4) / 4  # 10% to 48% noise per class
    score = np.clip(
        np.where(noisy, rng.normal(0.25, 0.12, 5000), rng.normal(0.7, 0.15, 5000)), 0, 1
    )
    got = clean_posterior(score, labels, num_classes=40)
    np.testing.assert_allclose(got, _textbook_clean_posterior(score, labels, 40), atol=1e-5)


def test_probe_rejects_rows_that_disagree():
    from heads.screen.probe import train_probe

    with pytest.raises(ValueError, match="shapes disagree"):
        train_probe(EMBED, one_hot(LABELS[:6], 2), np.ones(7, np.float32))
    with pytest.raises(ValueError, match="shapes disagree"):
        train_probe(EMBED, one_hot(LABELS, 2), np.ones(6, np.float32))
