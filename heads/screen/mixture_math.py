"""The small parameters of the folder-as-mixture EM (`folder_mixture.py`) and their M-step.

Everything here is (K, K), (K, D) or (D, D) float64 NumPy, shared by the torch and the NumPy
passes over the (N, .) rows, so both give the same parameters from the same statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from engine.ranges import NON_NEGATIVE, POSITIVE, UNIT, Interval, check_ranges
from heads.screen.modes import class_modes

LIKELIHOODS = ("gaussian", "both")


@dataclass
class MixtureOptions:
    """Knobs of the EM; each default says why (bench/NOISY.md has the measurements)."""

    # EM iterations: the composition settles within ~10 on the bench; 15 as the first probe.
    iters: int = 15
    # Support of a folder: itself and its nearest class means (siblings are where flips go).
    neighbours: int = 10
    # Initial catch-all weight per folder (then estimated): uniform flips come from anywhere.
    catch_all: float = 0.1
    # Shrinkage of the shared covariance toward a scaled identity: 300 classes of 20 samples
    # in 512 dims would otherwise give a singular within-class scatter.
    shrink: float = 0.1
    # Tail prior: every class mean is pulled toward its anchor (text embedding mapped into
    # image space, else the seed prototype) with the weight of this many samples.
    tail_strength: float = 5.0
    # Dirichlet pseudo-count added to every support entry of a folder's composition.
    dirichlet: float = 0.5
    # "both": the screening consensus (N, K) multiplies the Gaussian likelihood (power below).
    consensus_weight: float = 1.0
    # Power 1/T of the Gaussian likelihood (a tempered product of experts with a
    # discriminative likelihood): T > 1 keeps the composition/prior machinery but stops a
    # density that is wrong for multi-modal or anisotropic classes from dominating.
    gaussian_temperature: float = 1.0
    # Sub-means per class, at most (heads/screen/modes.py): species hold sub-types (male /
    # female, flower / leaf) that one mean sits between; 1 is the one-Gaussian-per-class EM.
    modes: int = 4
    # Penalty on each sub-mean when choosing a class's count (1 = BIC): 0.5 kept the plain
    # simulator's unimodal classes at one mean and split the realistic one's (NOISY.md).
    mode_penalty: float = 0.5
    # Seed samples a class needs per sub-mean (fewer: fewer sub-means).
    min_per_mode: int = 8
    # Dirichlet pseudo-count on the sub-means' weights within a class.
    mode_pseudo: float = 1.0
    # k-means++ draws of the sub-means (screening sets it to `ScreenConfig.seed`).
    seed: int = 0
    # Row block of the torch pass: (block, K x modes) float32 logits, 393 MB at 16k x 6000.
    block_rows: int = 16384

    RANGES: ClassVar[dict[str, Interval]] = {
        "catch_all": Interval(0.0, 1.0, low_open=True, high_open=True), "shrink": UNIT,
        "tail_strength": NON_NEGATIVE, "dirichlet": NON_NEGATIVE,
        "consensus_weight": NON_NEGATIVE, "gaussian_temperature": POSITIVE,
        "mode_penalty": NON_NEGATIVE, "mode_pseudo": POSITIVE,
    }  # fmt: skip

    def __post_init__(self):
        check_ranges(self, self.RANGES, "folder_mixture.options")
        if self.iters < 1 or self.neighbours < 0 or self.block_rows < 1:
            raise ValueError(f"need iters >= 1, neighbours >= 0, block_rows >= 1: {self}")
        if self.modes < 1 or self.min_per_mode < 1:
            raise ValueError(f"need modes >= 1 and min_per_mode >= 1: {self}")
        if not self.gaussian_temperature > 0:
            raise ValueError(f"need gaussian_temperature > 0: {self}")
        if not (0 < self.catch_all < 1 and 0 <= self.shrink <= 1):
            raise ValueError(f"need 0 < catch_all < 1 and 0 <= shrink <= 1: {self}")


@dataclass
class MixtureStats:
    """Sufficient statistics of one E-step, per sub-mean: mode_n (K, M) responsibilities,
    mode_rx (K, M, D) = their R^T X; xx (D, D) = X^T diag(1 - r_bg) X; folders (K, K) class
    responsibilities summed per folder."""

    mode_n: np.ndarray
    mode_rx: np.ndarray
    xx: np.ndarray
    folders: np.ndarray

    @property
    def rsum(self) -> np.ndarray:
        return self.mode_n.sum(1)

    @property
    def rx(self) -> np.ndarray:
        return self.mode_rx.sum(1)


@dataclass
class EMState:
    means: np.ndarray  # (K, D)
    cov: np.ndarray  # (D, D) shared
    prior: np.ndarray  # (K,) estimated true-class prior
    rho_s: np.ndarray  # (K, K) composition on the support, rows sum to 1
    catch: np.ndarray  # (K,) catch-all weight a(y)
    support: np.ndarray  # (K, K) bool
    anchors: np.ndarray  # (K, D) tail-prior targets
    mode_means: np.ndarray  # (K, M, D) sub-means (unused slots: the class mean)
    mode_logw: np.ndarray  # (K, M) log weight of each sub-mean in its class, -inf if unused

    def composition(self) -> np.ndarray:
        """(K, K) rho(c | y) = (1 - a) rho_s + a prior."""
        return (1 - self.catch)[:, None] * self.rho_s + self.catch[:, None] * self.prior[None]

    def linear(self):
        """Sub-mean log-likelihoods as x @ w.T + bias (+ terms of x alone, the same for every
        component, background included): w (K * M, D), bias (K * M,); a class's
        log-likelihood is logsumexp over its M of (that / temperature + mode_logw)."""
        mu = self.mode_means.reshape(-1, self.mode_means.shape[-1])
        w = np.linalg.solve(self.cov, mu.T).T
        return w, -0.5 * (w * mu).sum(1)

    @property
    def used(self) -> np.ndarray:
        """(K, M) bool: sub-mean slots in use."""
        return np.isfinite(self.mode_logw)


def _shrunk(cov: np.ndarray, shrink: float) -> np.ndarray:
    d = len(cov)
    return (1 - shrink) * cov + shrink * np.trace(cov) / d * np.eye(d)


def text_anchors(x, labels, seed_mask, text) -> np.ndarray:
    """(K, D) text embeddings mapped into the (centred) image space: the least-squares affine
    map t -> a t + b fitted between the text embeddings and the seed class means, since CLIP's
    text and image embeddings sit in different cones."""
    means, counts = _seed_means(x, labels, seed_mask, len(text))
    have = counts > 0
    t, m = text[have], means[have]
    tc, mc = t - t.mean(0), m - m.mean(0)
    scale = float((tc * mc).sum() / max((tc * tc).sum(), 1e-12))
    return scale * (text - t.mean(0)) + m.mean(0)


def _seed_means(x, labels, seed_mask, num_classes):
    """(K, D) mean of each folder's seed samples (all its samples where it has none)."""
    counts = np.bincount(labels[seed_mask], minlength=num_classes).astype(np.float64)
    sums = np.zeros((num_classes, x.shape[1]))
    np.add.at(sums, labels[seed_mask], x[seed_mask])
    empty = counts == 0
    if empty.any():
        every = np.bincount(labels, minlength=num_classes).astype(np.float64)
        all_sums = np.zeros_like(sums)
        np.add.at(all_sums, labels, x)
        sums[empty], counts[empty] = all_sums[empty], every[empty]
    return sums / np.maximum(counts, 1)[:, None], counts


def initial_state(x, labels, num_classes, seed_mask, anchors, opts: MixtureOptions) -> EMState:
    """Means and shared covariance from the seed (screening's clean) samples; each folder's
    composition = its seed share on itself, the rest over its nearest class means."""
    means, _ = _seed_means(x, labels, seed_mask, num_classes)
    resid = x[seed_mask] - means[labels[seed_mask]]
    cov = _shrunk(resid.T @ resid / max(len(resid), 1), opts.shrink)
    support = _support(means, cov, opts.neighbours)
    mode_means, used, which = _initial_modes(x, labels, seed_mask, means, cov, opts)
    if used.sum() > num_classes:  # the seeds' scatter around their own sub-means
        rows = np.flatnonzero(seed_mask)
        resid = x[rows] - mode_means[labels[rows], which[rows]]
        cov = _shrunk(resid.T @ resid / max(len(resid), 1), opts.shrink)
    size = np.bincount(labels, minlength=num_classes).astype(np.float64)
    keep = np.clip(np.bincount(labels[seed_mask], minlength=num_classes) / size.clip(1), 0.5, 0.95)
    rho_s = support * ((1 - keep) / np.maximum(support.sum(1) - 1, 1))[:, None]
    rho_s[np.arange(num_classes), np.arange(num_classes)] = keep
    rho_s /= rho_s.sum(1, keepdims=True)
    log_w = np.where(used, -np.log(used.sum(1, keepdims=True)), -np.inf)
    return EMState(means, cov, size / size.sum(), rho_s, np.full(num_classes, opts.catch_all),
                   support, means.copy() if anchors is None else anchors,
                   mode_means, log_w)  # fmt: skip


def _initial_modes(x, labels, seed_mask, means, cov, opts):
    """(K, M, D) sub-means, (K, M) slots in use and (N,) each seed row's sub-mean: the class
    mean alone when modes = 1."""
    k = len(means)
    if opts.modes == 1:
        return means[:, None].copy(), np.ones((k, 1), bool), np.zeros(len(x), np.int64)
    mode_means, used, which = class_modes(
        x, labels, seed_mask, np.linalg.inv(cov), num_classes=k, max_modes=opts.modes,
        min_per_mode=opts.min_per_mode, penalty=opts.mode_penalty, seed=opts.seed,
    )  # fmt: skip
    width = int(used.sum(1).max())  # slots no class uses cost compute and give nothing
    mode_means, used = mode_means[:, :width], used[:, :width]
    _class_mean_slots(mode_means, used, means)  # as computed by _seed_means, bit for bit
    return mode_means, used, which


def _class_mean_slots(mode_means, used, means) -> None:
    """In place: a class with one sub-mean has its class mean there (so modes = 1 is the
    one-mean EM exactly), and every unused slot carries the class mean."""
    single = used.sum(1) == 1
    mode_means[single] = means[single, None]
    mode_means[~used] = np.broadcast_to(means[:, None], mode_means.shape)[~used]


def _support(means, cov, neighbours: int) -> np.ndarray:
    """(K, K) bool: each class and its `neighbours` nearest class means (Mahalanobis)."""
    k = len(means)
    w = means @ np.linalg.inv(cov)
    sq = (w * means).sum(1)
    dist = sq[:, None] + sq[None] - 2 * w @ means.T
    np.fill_diagonal(dist, -np.inf)
    m = min(neighbours + 1, k)
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :m]
    support = np.zeros((k, k), bool)
    np.put_along_axis(support, nearest, True, axis=1)
    return support


def m_step(state: EMState, stats: MixtureStats, opts: MixtureOptions) -> EMState:
    """New means (tail prior), sub-means, shared covariance, prior, rho_s and catch-all
    weights."""
    n = stats.rsum
    tau = opts.tail_strength
    means = (stats.rx + tau * state.anchors) / (n + tau)[:, None]
    mode_means, mode_logw = _mode_step(state, stats, means, tau, opts.mode_pseudo)
    # sum_i sum_m r_im (x_i - mu_m)(x_i - mu_m)^T from the statistics, without the rows.
    d = means.shape[1]
    mu, rx, nm = mode_means.reshape(-1, d), stats.mode_rx.reshape(-1, d), stats.mode_n.ravel()
    scatter = stats.xx - rx.T @ mu - mu.T @ rx + (mu.T * nm) @ mu
    cov = _shrunk(scatter / max(n.sum(), 1e-12), opts.shrink)
    prior = (n + 1e-3) / (n + 1e-3).sum()
    # Split each folder's responsibilities between the support part and the catch-all in
    # proportion to their shares of rho (they depend only on (folder, class)).
    rho = state.composition()
    own = np.where(state.support, (1 - state.catch)[:, None] * state.rho_s / rho, 0.0)
    support_counts = stats.folders * own
    folder_total = stats.folders.sum(1)
    catch = 1 - support_counts.sum(1) / np.maximum(folder_total, 1e-12)
    rho_s = support_counts + opts.dirichlet * state.support
    rho_s /= rho_s.sum(1, keepdims=True)
    return replace(state, means=means, cov=cov, prior=prior, rho_s=rho_s,
                   catch=np.clip(catch, 1e-3, 0.999), mode_means=mode_means,
                   mode_logw=mode_logw)  # fmt: skip


def _mode_step(state: EMState, stats: MixtureStats, means, tau: float, pseudo: float):
    """Sub-means pulled toward their class's new mean with the weight of `tau` samples (a
    class with one sub-mean: that mean itself), and their weights within the class."""
    used = state.used
    weight = np.maximum(stats.mode_n + tau, 1e-12)[..., None]  # 0 only in unused slots
    mode_means = (stats.mode_rx + tau * means[:, None]) / weight
    _class_mean_slots(mode_means, used, means)
    count = np.where(used, stats.mode_n + pseudo, 0.0)
    with np.errstate(divide="ignore"):
        mode_logw = np.log(count / count.sum(1, keepdims=True))
    return mode_means, mode_logw
