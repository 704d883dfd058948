"""Two-component 1-d Gaussian mixtures fitted per class, pooled for small classes.

    p_clean = clean_posterior(score, labels, num_classes=K, strength=20)   # (N,)

One pooled mixture over all samples gives the shape of "clean" and "noisy" scores; each class
then refits with MAP updates that shrink its means, variances and mixing weight toward the
pooled ones with the weight of `strength` samples. Large classes find their own noise level
(no global noise rate is assumed); a class of 3 samples mostly inherits the pool.
"""

from __future__ import annotations

import numpy as np

_VAR_FLOOR = 1e-4


def _posterior_high(x, mean, var, mix) -> np.ndarray:
    """Responsibility of component 1 (the higher mean); params are (N, 2) or (2,)."""
    logp = -0.5 * (x[:, None] - mean) ** 2 / var - 0.5 * np.log(var) + np.log(mix)
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p[:, 1] / p.sum(axis=1)


def fit_pooled(x: np.ndarray, *, iters: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EM for a 2-component mixture on all scores; returns (mean, var, mix), each (2,)."""
    # Start with a small low component: at low noise the noisy samples are a thin low tail,
    # and an even split would instead cut the clean bulk in two (flagging half of it).
    mean = np.quantile(x, [0.05, 0.6]).astype(np.float64)
    var = np.full(2, max(x.var() / 4, _VAR_FLOOR))
    mix = np.array([0.1, 0.9])
    for _ in range(iters):
        r1 = _posterior_high(x, mean, var, mix)
        resp = np.stack([1 - r1, r1], axis=1)  # (N, 2)
        mass = resp.sum(0) + 1e-9
        mean = (resp * x[:, None]).sum(0) / mass
        var = np.maximum((resp * (x[:, None] - mean) ** 2).sum(0) / mass, _VAR_FLOOR)
        mix = mass / mass.sum()
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
    for _ in range(iters):
        r1 = _posterior_high(x, mean[labels], var[labels], mix[labels])
        resp = np.stack([1 - r1, r1], axis=1)  # (N, 2)
        mass = _per_class(resp, labels, num_classes)  # (K, 2)
        sx = _per_class(resp * x[:, None], labels, num_classes)
        mean_new = (sx + strength * p_mix * p_mean) / (mass + strength * p_mix)
        dev = resp * (x[:, None] - mean_new[labels]) ** 2
        sxx = _per_class(dev, labels, num_classes)
        var = np.maximum((sxx + strength * p_mix * p_var) / (mass + strength * p_mix), _VAR_FLOOR)
        mean = mean_new
        mix = (mass + strength * p_mix) / (mass.sum(1, keepdims=True) + strength)
    # Keep "component 1 = clean" even where a class's means crossed.
    swap = mean[:, 0] > mean[:, 1]
    mean[swap], var[swap], mix[swap] = mean[swap, ::-1], var[swap, ::-1], mix[swap, ::-1]
    return _posterior_high(x, mean[labels], var[labels], mix[labels]).astype(np.float32)


def _per_class(values: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    out = np.zeros((num_classes, values.shape[1]))
    for j in range(values.shape[1]):
        out[:, j] = np.bincount(labels, weights=values[:, j], minlength=num_classes)
    return out
