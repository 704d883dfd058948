"""The folder-as-mixture EM (issue 18): recovers a known folder composition, is seeded and
deterministic, torch equals the NumPy reference, and the tail prior and the background
weight act as documented; the relabeling stage (on by default) feeds the final targets."""

import json
from dataclasses import replace

import numpy as np
import pytest

from engine.errors import UserError
from heads.screen import ScreenConfig, ScreenInputs, ScreenResult
from heads.screen.folder_mixture import (
    MixtureOptions,
    fit_folder_mixture,
    fit_folder_mixture_reference,
)
from heads.screen.partition import CLEAN, OUT_OF_SET
from heads.screen.relabel import FolderMixtureConfig, background_weights, relabel

# Folder 0 holds ~70% class 0 and ~30% class 1, its nearest class (the sibling flips go to);
# folders 1-3 are pure. Classes 2 and 3 sit far from both.
COMPOSITION = np.array([[0.7, 0.3, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
OPTS = MixtureOptions(neighbours=1, iters=15, tail_strength=1.0)


def _folders(seed=0, per_folder=100, dim=8):
    rng = np.random.default_rng(seed)
    means = 3.0 * np.eye(4, dim)
    means[1] = means[0] + 2.5 * np.eye(dim)[1]
    labels = np.repeat(np.arange(4), per_folder)
    true = np.concatenate([rng.choice(4, per_folder, p=row) for row in COMPOSITION])
    embed = means[true] + rng.standard_normal((len(true), dim)) * 0.5
    seed_mask = true == labels  # screening's clean set: the samples of their own class
    return embed.astype(np.float32), labels, true, seed_mask


def _fit(fn=fit_folder_mixture, background=0.02, **kw):
    embed, labels, _, seed_mask = _folders()
    b = np.full(len(labels), background)
    extra = {"device": "cpu"} if fn is fit_folder_mixture else {}
    return fn(embed, labels, 4, seed_mask=seed_mask, background=b, opts=kw.pop("opts", OPTS),
              **extra, **kw)  # fmt: skip


def test_em_recovers_the_known_folder_composition_within_002():
    """Every rho(c | folder) within 0.02 of the drawn composition (the catch-all keeps ~0.003
    on each class outside a folder's support)."""
    fit = _fit()
    embed, labels, true, _ = _folders()
    drawn = np.zeros((4, 4))
    np.add.at(drawn, (labels, true), 1)
    drawn /= drawn.sum(1, keepdims=True)
    assert abs(drawn[0, 1] - 0.3) < 0.1  # the draw is the stated mixture
    np.testing.assert_allclose(fit.composition, drawn, atol=0.02)
    assert (fit.resp.argmax(1) == true).mean() > 0.99  # names the true class of the flips


def test_same_seed_same_fit_and_torch_matches_numpy_reference():
    a, b = _fit(), _fit()
    np.testing.assert_array_equal(a.resp, b.resp)
    ref = _fit(fit_folder_mixture_reference)
    np.testing.assert_allclose(a.resp, ref.resp, atol=2e-3)
    np.testing.assert_allclose(a.composition, ref.composition, atol=2e-3)
    np.testing.assert_allclose(a.prior, ref.prior, atol=1e-3)


def test_responsibilities_already_have_the_estimated_marginals():
    """The prior is re-estimated as the mean of the responsibilities, so at convergence their
    column shares are the estimated prior: a balanced (Sinkhorn) assignment toward those
    marginals would change nothing (bench/NOISY.md, "Pieces")."""
    fit = _fit()
    shares = fit.resp.sum(0) / fit.resp.sum()
    assert np.abs(shares - fit.prior).sum() < 0.01


def test_torch_blocks_equal_one_block():
    small = MixtureOptions(neighbours=1, tail_strength=1.0, block_rows=150)
    np.testing.assert_allclose(_fit(opts=small).resp, _fit().resp, atol=1e-5)


def test_estimated_prior_follows_the_true_class_counts_not_uniform():
    fit = _fit()
    _, _, true, _ = _folders()
    np.testing.assert_allclose(fit.prior, np.bincount(true) / len(true), atol=0.02)


def test_tail_prior_pulls_a_small_class_toward_its_anchor():
    """With strength 0 the means are the image means. With the weight of 200 samples the
    5-sample class's mean moves (nearly) all the way to its anchor, the 200-sample class's
    half-way: the tail prior matters for small classes only. (The text here carries no image
    direction, so the fitted text-to-image map puts both anchors at the mean of the means.)"""
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], [200, 5])
    embed = (3.0 * np.eye(2, 6)[labels] + 0.3 * rng.standard_normal((205, 6))).astype(np.float32)
    text = np.eye(2, 6, k=2).astype(np.float32)  # anchors far from both image means
    kw = dict(seed_mask=np.ones(205, bool), background=np.full(205, 0.02), text_embed=text)

    def fit(strength):
        opts = MixtureOptions(neighbours=1, iters=5, tail_strength=strength)
        return fit_folder_mixture(embed, labels, 2, opts=opts, device="cpu", **kw).means

    image_means = np.stack([embed[labels == c].mean(0) for c in (0, 1)]) - embed.mean(0)
    free, pulled = fit(0.0), fit(200.0)
    np.testing.assert_allclose(free, image_means, atol=0.05)
    moved = np.linalg.norm(pulled - free, axis=1)
    way = np.linalg.norm(free - free.mean(0), axis=1)  # distance of each mean to its anchor
    np.testing.assert_allclose(moved / way, [0.5, 200 / 205], atol=0.05)


def test_background_weight_takes_unexplained_samples_only():
    """A sample of a class its folder does not hold goes to the background in proportion to
    its weight; a sample its folder explains keeps most of its class."""
    embed, labels, true, seed_mask = _folders()
    odd = np.flatnonzero(labels == 2)[:3]
    embed[odd] = 3.0 * np.eye(4, 8)[3] + 0.1  # class 3's images filed in folder 2
    b = np.full(len(labels), 0.02)
    kw = dict(seed_mask=seed_mask, opts=OPTS, device="cpu")
    low = fit_folder_mixture(embed, labels, 4, background=b, **kw)
    b[odd] = 0.5
    high = fit_folder_mixture(embed, labels, 4, background=b, **kw)
    assert high.background[odd].min() > 0.9 and low.background[odd].max() < 0.5
    explained = np.flatnonzero(labels == 1)[:3]
    b[explained] = 0.5
    also = fit_folder_mixture(embed, labels, 4, background=b, **kw)
    # The background takes b * prior(c) against (1 - b) * rho(c | y): little at 1500 classes,
    # here (4 classes, prior ~0.34) a quarter.
    rho, prior = also.composition[1, 1], also.prior[1]
    np.testing.assert_allclose(also.background[explained], prior / (prior + rho), atol=0.02)


def _screened(per_folder=60):
    """A screening result on `_folders`: clean = the samples of their own folder's class."""
    embed, labels, true, seed_mask = _folders(per_folder=per_folder)
    n, k = len(labels), 4
    state = np.where(seed_mask, CLEAN, 3).astype(np.int8)  # flips dropped
    hard = np.eye(k, dtype=np.float32)[labels]
    result = ScreenResult(state, hard, seed_mask.astype(np.float32), labels, np.zeros(n),
                          np.zeros(n, np.float32), {}, hard)  # fmt: skip
    return ScreenInputs(embed, labels, k), result, true


def test_stage_feeds_targets_and_names_a_class():
    inputs, base, true = _screened()
    assert ScreenConfig().mixture == FolderMixtureConfig()  # on by default
    res = relabel(base, inputs, FolderMixtureConfig(device="cpu"))
    assert res.mixture_class.shape == true.shape and res.mixture_prob.dtype == np.float32
    assert (res.mixture_class == true).mean() > 0.95
    np.testing.assert_allclose(res.targets.sum(1), 1, atol=1e-5)
    assert np.array_equal(res.targets.argmax(1), res.mixture_class)
    assert (res.weights > 0.9).all()  # no out-of-set state: every sample keeps its weight
    # rows="flagged" leaves the clean samples' targets as screening made them.
    flagged = relabel(base, inputs, FolderMixtureConfig(rows="flagged", gate="off", device="cpu"))
    clean = base.state == CLEAN
    np.testing.assert_array_equal(flagged.targets[clean], base.targets[clean])
    assert (flagged.targets[~clean].argmax(1) == true[~clean]).mean() > 0.95


def test_background_weights_follow_the_out_of_set_state_and_bad_config_fails():
    state = np.array([CLEAN, OUT_OF_SET])
    assert background_weights(state, FolderMixtureConfig()).tolist() == [0.02, 0.5]
    with pytest.raises(ValueError, match="rows"):
        FolderMixtureConfig(rows="some")
    with pytest.raises(ValueError, match="background"):
        FolderMixtureConfig(background=0.01, background_floor=0.1)


def _two_mode_folders(seed=0, per_mode=60, dim=8):
    """Both classes have two sub-clusters (male / female): class 0 along one axis, class 1
    along another, so class 1's one-Gaussian mean sits on class 0's second mode and the EM
    pulls that mode's CLEAN samples into class 1. Each folder also holds flips from the other
    class. The student (a nearest-sub-cluster classifier: it can represent modes) is right."""
    rng = np.random.default_rng(seed)
    e = np.eye(dim)
    modes = [[-3.0 * e[0], 3.0 * e[0]], [3.0 * e[0] + 2.0 * e[1], 3.0 * e[0] - 2.0 * e[1]]]
    parts, labels, true = [], [], []
    for folder, cls, centre, count in [
        (0, 0, 0, per_mode),
        (0, 0, 1, per_mode),
        (1, 1, 0, per_mode),
        (1, 1, 1, per_mode),
        (0, 1, 0, per_mode // 2),
        (1, 0, 0, per_mode // 2),
    ]:
        parts.append(modes[cls][centre] + 0.4 * rng.standard_normal((count, dim)))
        labels += [folder] * count
        true += [cls] * count
    embed, labels, true = np.concatenate(parts), np.array(labels), np.array(true)
    dist = np.stack([np.min([((embed - c) ** 2).sum(1) for c in cs], 0) for cs in modes], 1)
    student = np.exp(-(dist - dist.min(1, keepdims=True)) / (2 * 0.4**2 * dim))
    student /= student.sum(1, keepdims=True)
    return embed.astype(np.float32), labels, true, student


def _two_mode_result(embed, labels, true):
    n, k = len(labels), 2
    clean = true == labels
    hard = np.eye(k, dtype=np.float32)[labels]
    state = np.where(clean, CLEAN, 3).astype(np.int8)
    return ScreenInputs(embed, labels, k), ScreenResult(
        state, hard, clean.astype(np.float32), labels, np.zeros(n), np.zeros(n, np.float32),
        {}, hard)  # fmt: skip


ONE_MEAN = MixtureOptions(neighbours=1, tail_strength=1.0, modes=1)


def test_sub_means_name_every_sample_of_a_multimodal_class_ungated():
    """With one mean per class the EM moves clean samples of class 0's near mode into class 1
    (the mean of class 1 sits on it); with sub-means (the default; in 8 dims the penalty lets
    k-means split each sub-type further) it keeps the clean samples (one of 240 on the
    border excepted) and names every flip, no gate needed."""
    embed, labels, true, _ = _two_mode_folders()
    inputs, base = _two_mode_result(embed, labels, true)
    clean = base.state == CLEAN

    def fit(opts):
        return fit_folder_mixture(embed, labels, 2, seed_mask=clean, opts=opts, device="cpu",
                                  background=np.full(len(labels), 0.02))  # fmt: skip

    one = fit(ONE_MEAN)
    assert (one.resp.argmax(1) == true)[clean].mean() < 0.85 and one.modes.tolist() == [1, 1]
    sub = fit(replace(ONE_MEAN, modes=4))
    assert sub.modes.min() >= 2
    named = sub.resp.argmax(1) == true
    assert named[clean].mean() > 0.99 and named[~clean].all()


def test_torch_matches_the_numpy_reference_with_sub_means():
    embed, labels, true, _ = _two_mode_folders()
    kw = dict(seed_mask=true == labels, background=np.full(len(labels), 0.02),
              opts=replace(ONE_MEAN, modes=3, block_rows=70))  # fmt: skip
    fast = fit_folder_mixture(embed, labels, 2, device="cpu", **kw)
    ref = fit_folder_mixture_reference(embed, labels, 2, **kw)
    assert fast.modes.tolist() == ref.modes.tolist() and fast.modes.min() >= 2
    np.testing.assert_allclose(fast.resp, ref.resp, atol=2e-3)
    np.testing.assert_allclose(fast.composition, ref.composition, atol=2e-3)
    np.testing.assert_allclose(fast.means, ref.means, atol=1e-3)


def test_gates_keep_clean_samples_of_a_multimodal_class():
    """Ungated, the one-Gaussian EM moves clean samples of class 0's near mode into class 1;
    gated by the student, the neighbours' votes or both it does not, and still
    names the flips (all where the gate is the student; >= 90% where it is the neighbours':
    a flip among flips keeps screening's target)."""
    embed, labels, true, student = _two_mode_folders()
    inputs, base = _two_mode_result(embed, labels, true)
    signals = {"model": student, "knn": _knn_votes(embed, labels)}
    opts = ONE_MEAN
    clean = base.state == CLEAN

    def right(**kw):
        out = relabel(base, inputs, FolderMixtureConfig(device="cpu", options=opts, **kw), signals)
        return out.targets.argmax(1) == true

    assert right(gate="off")[clean].mean() < 0.85
    assert right(gate="student")[clean].all() and right(gate="student")[~clean].all()
    for gated in (right(gate="knn"), right(gate="student+knn")):
        assert gated[clean].all() and gated[~clean].mean() >= 0.9


def _knn_votes(embed, labels, k=10):
    """(N, 2) share of each folder among a sample's k nearest other samples."""
    dist = ((embed[:, None] - embed[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    nearest = np.argsort(dist, 1, kind="stable")[:, :k]
    return np.stack([(labels[nearest] == c).mean(1) for c in range(2)], 1)


def test_gates_need_their_signals_and_cut_targets_stay_distributions():
    embed, labels, true, student = _two_mode_folders()
    inputs, base = _two_mode_result(embed, labels, true)
    cfg = FolderMixtureConfig(device="cpu", gate="student+knn", options=ONE_MEAN)
    with pytest.raises(ValueError, match="knn"):
        relabel(base, inputs, cfg)  # no round seen: no signals to gate with
    with pytest.raises(ValueError, match="gate"):
        FolderMixtureConfig(gate="some")
    out = relabel(base, inputs, FolderMixtureConfig(device="cpu", min_target=0.2))
    np.testing.assert_allclose(out.targets.sum(1), 1, atol=1e-6)
    kept = out.targets[out.targets > 0]
    assert kept.min() >= 0.2 and out.mixture_prob.min() > 0.5


def test_tempered_gaussian_times_student_keeps_the_multimodal_class():
    """use_student: at T = 1 the Gaussian still dominates the product and moves the near
    mode's clean samples; at T = 4 the student leads and keeps them (bench/NOISY.md: on the
    bench, tempering alone did not make the stage safe; the gate did)."""
    embed, labels, true, student = _two_mode_folders()
    inputs, base = _two_mode_result(embed, labels, true)
    clean = base.state == CLEAN

    def clean_kept(temperature):
        opts = replace(ONE_MEAN, gaussian_temperature=temperature)
        cfg = FolderMixtureConfig(device="cpu", gate="off", use_student=True, options=opts)
        return (relabel(base, inputs, cfg, {"model": student}).targets.argmax(1) == true)[clean]

    assert clean_kept(1.0).mean() < 0.85 and clean_kept(4.0).mean() == 1.0
    with pytest.raises(
        UserError, match="gaussian_temperature must be a finite number in \\(0, inf\\)"
    ):
        MixtureOptions(gaussian_temperature=0)


@pytest.mark.parametrize("gate", ["off", "student+knn"])
def test_screening_runs_the_stage_as_the_bench_does_on_recovered_signals(gate, tmp_path):
    """`run_screening` (the stage on by default; a gate reads the last round's student and kNN
    votes) gives what the bench computes from the result without the stage and the signals
    recovered from its consensus (`bench.noisy_bench.last_round_signals`), and saves it."""
    from bench.noisy_bench import last_round_signals
    from bench.synthetic import Realism, make_noisy_features
    from engine import runs as run_files
    from heads.screen import run_screening
    from heads.screen.report import load_targets

    data = make_noisy_features(num_classes=8, imbalance=3, noise=0.3, max_per_class=30,
                               realism=Realism(), seed=0)  # fmt: skip
    inputs = ScreenInputs(data.embed, data.labels, data.num_classes, data.text_embed)
    cfg = ScreenConfig(rounds=1, seed=3, device="cpu", mixture=FolderMixtureConfig(gate=gate))
    staged = run_screening(inputs, cfg, out_dir=tmp_path)
    before = run_screening(inputs, replace(cfg, mixture=None))
    signals = last_round_signals(before, inputs, cfg)
    stage = cfg.mixture.for_screening(3, "cpu")
    assert (stage.options.seed, stage.device) == (3, "cpu")
    bench = relabel(before, inputs, stage, signals)
    np.testing.assert_allclose(staged.targets, bench.targets, atol=1e-5)
    np.testing.assert_array_equal(staged.mixture_class, bench.mixture_class)
    np.testing.assert_array_equal(staged.state, before.state)  # the stage keeps the states
    saved = tmp_path / run_files.MIXTURE_DIR
    assert sorted(p.name for p in saved.iterdir()) == sorted(run_files.MIXTURE_FILES)
    np.testing.assert_allclose(load_targets(saved / "target.npz"), staged.targets)
    np.testing.assert_array_equal(np.load(saved / "mixture_class.npy"), staged.mixture_class)
    summary = json.loads((tmp_path / run_files.SUMMARY).read_text())
    moved = int((staged.mixture_class != data.labels).sum())
    assert summary["mixture"]["moved"] == moved and "mixture" not in summary["rounds"][-1]
