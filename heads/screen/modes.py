"""Sub-means of each class for the folder-as-mixture EM: how many, and where they start.

    means, used = class_modes(x, labels, seed_mask, precision, opts)   # (K, M, D), (K, M)

A species photographed as male and female, flower and leaf, larva and adult is not one blob
in CLIP space: one mean sits between its sub-types, and a shared-covariance Gaussian then
hands a whole sub-type to whichever class's mean lies nearer (bench/NOISY.md: the one-mean EM
lost up to 6.2 points on the realistic simulator). So each class gets up to `opts.modes`
sub-means, found by k-means on its seed samples in the whitened space of the shared
covariance (Euclidean there is the Mahalanobis distance the EM's likelihood uses), and the
count is chosen per class by a penalised likelihood,

    score(m) = 1/2 sum_i min_j |z_i - c_j|^2 + penalty * m * D/2 * log(n)

(penalty 1 is BIC), so a compact, unimodal class keeps one mean and the EM stays what it was
there. A class with fewer than `opts.min_per_mode` seed samples per extra mean keeps fewer.
Unused slots carry the class mean and no weight.
"""

from __future__ import annotations

import numpy as np


def whitener(precision: np.ndarray) -> np.ndarray:
    """(D, D) L with x @ L mapping rows so that Euclidean distance is the Mahalanobis one of
    `precision` (its Cholesky factor: L L^T = precision)."""
    return np.linalg.cholesky(precision)


def kmeans(z: np.ndarray, m: int, rng: np.random.Generator, iters: int = 10) -> np.ndarray:
    """(n,) cluster of each row: k-means++ start, then `iters` Lloyd steps (deterministic
    given `rng`)."""
    centres = z[[rng.integers(len(z))]]
    for _ in range(1, m):
        far = _sq_dist(z, centres).min(1)
        total = far.sum()
        pick = rng.choice(len(z), p=far / total) if total > 0 else rng.integers(len(z))
        centres = np.vstack([centres, z[pick]])
    for _ in range(iters):
        assign = _sq_dist(z, centres).argmin(1)
        for j in range(m):
            if (assign == j).any():
                centres[j] = z[assign == j].mean(0)
    return _sq_dist(z, centres).argmin(1)


def _sq_dist(z: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(n, m) squared distances by one product (no (n, m, D) difference array)."""
    d = (z * z).sum(1)[:, None] - 2 * z @ centres.T + (centres * centres).sum(1)[None]
    return np.maximum(d, 0)


def choose_modes(z: np.ndarray, max_modes: int, penalty: float, seed) -> np.ndarray:
    """(n,) sub-mean of each of one class's whitened seed rows, the count chosen by the
    penalised score of the module docstring (ties keep fewer means)."""
    n, dim = z.shape
    best_score, best = None, np.zeros(n, np.int64)
    for m in range(1, max_modes + 1):
        assign = np.zeros(n, np.int64) if m == 1 else kmeans(z, m, np.random.default_rng(seed))
        fit = sum(((z[assign == j] - z[assign == j].mean(0)) ** 2).sum() for j in range(m)
                  if (assign == j).any())  # fmt: skip
        score = 0.5 * fit + penalty * m * dim / 2 * np.log(max(n, 2))
        if best_score is None or score < best_score:
            best_score, best = score, assign
    return np.unique(best, return_inverse=True)[1]  # no empty cluster in between


def class_modes(x, labels, seed_mask, precision, *, num_classes, max_modes, min_per_mode,
                penalty, seed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(K, M, D) starting sub-means (in x's space), (K, M) bool slots in use (M =
    `max_modes`) and (N,) the sub-mean of each row they were found from (0 elsewhere). Each
    class from its seed samples (all its samples where it has none)."""
    dim = x.shape[1]
    means = np.zeros((num_classes, max_modes, dim))
    used = np.zeros((num_classes, max_modes), bool)
    lower = whitener(precision)
    which = np.zeros(len(x), np.int64)
    # Each class's rows in index order, found once (not a pass over N per class).
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(num_classes + 1))
    for c in range(num_classes):
        members = order[bounds[c] : bounds[c + 1]]
        rows = members[seed_mask[members]]
        if len(rows) == 0:
            rows = members
        xc = x[rows]
        means[c] = xc.mean(0) if len(rows) else 0.0
        used[c, 0] = True
        m = min(max_modes, max(1, len(rows) // min_per_mode))
        if m < 2:
            continue
        assign = choose_modes(xc @ lower, m, penalty, [seed, c])
        which[rows] = assign
        for j in range(assign.max() + 1):
            means[c, j], used[c, j] = xc[assign == j].mean(0), True
    return means, used, which
