"""Two-component 1-d Gaussian mixtures fitted per class, pooled for small classes.

    p_clean = clean_posterior(score, labels, num_classes=K, strength=20)   # (N,)

One pooled mixture over all samples gives the shape of "clean" and "noisy" scores; each class
then refits with MAP updates that shrink its means, variances and mixing weight toward the
pooled ones with the weight of `strength` samples. Large classes find their own noise level
(no global noise rate is assumed); a class of 3 samples mostly inherits the pool.

Every EM step works on (N,) vectors: the clean responsibility is a logistic of the two
components' log-density difference, and the noisy one is its complement, so no (N, 2) arrays
are built (at 300k samples the (N, 2) form spent seconds in 130 passes of stack/max/exp).
"""

from __future__ import annotations

import numpy as np

_VAR_FLOOR = 1e-4


def _log_density(x, mean, var, mix):
    return -0.5 * (x - mean) ** 2 / var - 0.5 * np.log(var) + np.log(mix)


def _posterior_high(x, mean, var, mix) -> np.ndarray:
    """Responsibility of component 1 (the higher mean); params are (..., 2), per sample or not."""
    log_odds = _log_density(x, mean[..., 1], var[..., 1], mix[..., 1]) - _log_density(
        x, mean[..., 0], var[..., 0], mix[..., 0]
    )
    return 0.5 * (1.0 + np.tanh(0.5 * log_odds))  # the logistic, without exp overflow


def fit_pooled(x: np.ndarray, *, iters: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EM for a 2-component mixture on all scores; returns (mean, var, mix), each (2,)."""
    # Start with a small low component: at low noise the noisy samples are a thin low tail,
    # and an even split would instead cut the clean bulk in two (flagging half of it).
    mean = np.quantile(x, [0.05, 0.6]).astype(np.float64)
    var = np.full(2, max(x.var() / 4, _VAR_FLOOR))
    mix = np.array([0.1, 0.9])
    total = x.sum()
    for _ in range(iters):
        r1 = _posterior_high(x, mean, var, mix)
        r0 = 1 - r1
        m0, m1 = r0.sum() + 1e-9, r1.sum() + 1e-9
        sx1 = r1 @ x
        mean = np.array([(total - sx1) / m0, sx1 / m1])
        var = np.maximum([r0 @ (x - mean[0]) ** 2 / m0, r1 @ (x - mean[1]) ** 2 / m1], _VAR_FLOOR)
        mix = np.array([m0, m1]) / (m0 + m1)
    order = np.argsort(mean)  # component 1 is the clean (high-score) one
    return mean[order], var[order], mix[order]


def clean_posterior(
    score: np.ndarray, labels: np.ndarray, *, num_classes: int, strength: float = 20.0, iters=30
) -> np.ndarray:
    """(N,) posterior of the high-score (clean) component, per class with pooled shrinkage."""
    x = np.asarray(score, np.float64)
    if x.shape != labels.shape:
        raise ValueError(f"score {x.shape} and labels {labels.shape} must both be (N,)")
    p_mean, p_var, p_mix = fit_pooled(x)
    mean = np.tile(p_mean, (num_classes, 1))  # (K, 2)
    var = np.tile(p_var, (num_classes, 1))
    mix = np.tile(p_mix, (num_classes, 1))
    count = np.bincount(labels, minlength=num_classes).astype(np.float64)
    sum_x = np.bincount(labels, weights=x, minlength=num_classes)
    prior = strength * p_mix  # (2,) pseudo-samples per component
    for _ in range(iters):
        r1 = _posterior_high(x, mean[labels], var[labels], mix[labels])
        mass1 = np.bincount(labels, weights=r1, minlength=num_classes)
        sx1 = np.bincount(labels, weights=r1 * x, minlength=num_classes)
        mass = np.stack([count - mass1, mass1], axis=1)  # (K, 2)
        sx = np.stack([sum_x - sx1, sx1], axis=1)
        mean = (sx + prior * p_mean) / (mass + prior)
        dev0, dev1 = (x - mean[labels, 0]) ** 2, (x - mean[labels, 1]) ** 2
        sxx1 = np.bincount(labels, weights=r1 * dev1, minlength=num_classes)
        sxx0 = np.bincount(labels, weights=(1 - r1) * dev0, minlength=num_classes)
        sxx = np.stack([sxx0, sxx1], axis=1)
        var = np.maximum((sxx + prior * p_var) / (mass + prior), _VAR_FLOOR)
        mix = (mass + prior) / (mass.sum(1, keepdims=True) + strength)
    # Keep "component 1 = clean" even where a class's means crossed.
    swap = mean[:, 0] > mean[:, 1]
    mean[swap], var[swap], mix[swap] = mean[swap, ::-1], var[swap, ::-1], mix[swap, ::-1]
    return _posterior_high(x, mean[labels], var[labels], mix[labels]).astype(np.float32)
