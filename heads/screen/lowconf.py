"""How the probe learns from low-confidence samples: SRRS mixup and candidate-label PLL.

    partner = mixup_partners(targets, weights, rng)       # (N,) high-confidence partner or -1
    x, t = mix_rows(x, t, low_rows, partner_rows, lam)   # x_low <- lam x_low + (1-lam) x_high
    targets[amb] = candidate_targets(labels[amb], knn_top[amb], model_top[amb], K)
    per = partial_label_loss(logp, candidate_mask)       # -log sum_{c in S} p_c

Both are options of the screening probe (`ProbeConfig.mixup_alpha`, `partial_label`), off by
default (measured in bench/NOISY.md). A low-confidence sample is one the screening did not
keep as-is: weight < 1 or a soft target (ambiguous, soft-relabeled). A high-confidence one
has weight >= 1 and a one-hot target (clean or relabeled). A candidate-label target is a row
uniform over its 2+ candidate classes, so trainers without the partial-label loss read it as
a plain soft target (uniform over the candidates).
"""

from __future__ import annotations

import numpy as np
import torch

# Tolerance for "one-hot" and "uniform over its support" (targets are float32).
_EPS = 1e-6


def high_confidence(targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(N,) bool: weight >= 1 and a one-hot target (kept or relabeled by the screening)."""
    return (weights >= 1 - _EPS) & (targets.max(1) >= 1 - _EPS)


def mixup_partners(targets: np.ndarray, weights: np.ndarray, rng) -> np.ndarray:
    """(N,) index of a random high-confidence sample of the same (argmax) target class for
    every low-confidence sample with weight > 0; -1 for the rest and for classes with no
    high-confidence sample."""
    high = high_confidence(targets, weights)
    cls = targets.argmax(1)  # (N,)
    pool = np.flatnonzero(high)
    pool = pool[np.argsort(cls[pool], kind="stable")]  # high rows grouped by class
    pool_cls = cls[pool]
    low = np.flatnonzero(~high & (weights > 0))
    start = np.searchsorted(pool_cls, cls[low], side="left")
    count = np.searchsorted(pool_cls, cls[low], side="right") - start
    partner = np.full(len(targets), -1, np.int64)
    ok = count > 0
    pick = start[ok] + (rng.random(int(ok.sum())) * count[ok]).astype(np.int64)
    partner[low[ok]] = pool[pick]
    return partner


def mix_rows(x, t, low, partner, lam):
    """Copies of (N, D) x and (N, K) t whose rows `low` are mixed with rows `partner`:
    x[low] = lam x[low] + (1 - lam) x[partner], likewise t; `lam` (L,) or a scalar.
    Works on numpy arrays and torch tensors alike."""
    lam = lam[:, None] if getattr(lam, "ndim", 0) == 1 else lam  # (L, 1)
    x, t = (
        x.clone() if torch.is_tensor(x) else x.copy(),
        t.clone() if torch.is_tensor(t) else t.copy(),
    )
    x[low] = lam * x[low] + (1 - lam) * x[partner]  # (L, D)
    t[low] = lam * t[low] + (1 - lam) * t[partner]  # (L, K)
    return x, t


def candidate_targets(
    given: np.ndarray, knn_top: np.ndarray, model_top: np.ndarray, num_classes: int
) -> np.ndarray:
    """(A, K) float32 rows uniform over the candidate set {given, kNN top, model top}."""
    mask = np.zeros((len(given), num_classes), np.float32)
    rows = np.arange(len(given))
    for choice in (given, knn_top, model_top):
        mask[rows, choice] = 1.0
    return mask / mask.sum(1, keepdims=True)


def candidate_rows(targets: torch.Tensor) -> torch.Tensor:
    """(N,) bool: rows uniform over a support of 2+ classes (candidate-label targets)."""
    support = targets > 0  # (N, K)
    low = torch.where(support, targets, torch.full_like(targets, 2.0)).min(1).values  # (N,)
    return (support.sum(1) >= 2) & (targets.max(1).values - low < _EPS)


def partial_label_loss(logp: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """(N,) -log(sum of probabilities over each row's candidate set), from (N, K) log-softmax
    and a (N, K) candidate mask; equals cross-entropy when the set is one label."""
    masked = logp.masked_fill(candidates <= 0, float("-inf"))  # (N, K)
    return -torch.logsumexp(masked, dim=1)
