"""`srrs-mixup`: SRRS low-confidence mixup in the screening's probe.

    ScreenConfig(extras=("srrs-mixup",))
    partner = mixup_partners(targets, weights, rng)       # (N,) high-confidence partner or -1
    x, t = mix_rows(x, t, low_rows, partner_rows, lam)   # x_low <- lam x_low + (1-lam) x_high

Every probe step, each low-confidence sample (one the screening did not keep as-is: weight
< 1 or a soft target, i.e. ambiguous or soft-relabeled) is mixed with a random
high-confidence one (weight >= 1 and a one-hot target: clean or relabeled) of its target
class, lam ~ Beta(alpha, alpha). It changes only the screening's own probe (the `train_fn`
when none is given); bench top-1 on/off 85.3/85.5, 65.4/65.5, 39.1/39.7: off by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from heads.screen.extras.base import Extra, register_extra
from heads.screen.probe import ProbeHooks

# Tolerance for "one-hot" (targets are float32).
_EPS = 1e-6


@dataclass
class MixupConfig:
    # Beta(0.4, 0.4) keeps most mixes near one end; 0.2 and 1.0 were no better (NOISY.md).
    alpha: float = 0.4

    def __post_init__(self):
        if self.alpha <= 0:
            raise ValueError(f"srrs-mixup alpha must be > 0, got {self.alpha}")


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


class Mixer:
    """Draws the mixup of low- with high-confidence rows for each probe step (seeded)."""

    def __init__(self, targets, weights, alpha: float, seed: int):
        targets, weights = (
            a.cpu().numpy() if torch.is_tensor(a) else a for a in (targets, weights)
        )
        self.targets, self.weights, self.alpha = targets, weights, alpha
        self.rng = np.random.default_rng(seed + 1)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        partner = mixup_partners(self.targets, self.weights, self.rng)  # (N,)
        low = np.flatnonzero(partner >= 0)
        lam = self.rng.beta(self.alpha, self.alpha, len(low)).astype(np.float32)  # (L,)
        low, partner, lam = (torch.from_numpy(a).to(x.device) for a in (low, partner[low], lam))
        return mix_rows(x, t, low, partner, lam)


@register_extra("srrs-mixup")
class Mixup(Extra):
    """The screening's probe mixes its low-confidence rows with high-confidence ones."""

    Config = MixupConfig

    def probe_hooks(self) -> ProbeHooks:
        return ProbeHooks(mix=lambda targets, weights, seed: Mixer(targets, weights,
                                                                   self.cfg.alpha, seed))  # fmt: skip
