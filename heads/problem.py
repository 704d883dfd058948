"""Row selection: which rows of the store a fit trains on, with what targets and weights.

    rows, tgt, wts = select_rows(data, targets, weights, indices)
    problem = make_problem(tgt, wts, device)
    t, w, hard = problem.batch(rows_on_device)          # (B, K), (B,), (B,)

Unlabeled rows and weight-0 rows carry no signal and are left out; the rest become a
`Problem`: targets, weights and the class prior on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import UserError
from heads.data import one_hot_targets
from heads.losses import log_class_prior


@dataclass
class Problem:
    """Everything one epoch needs, on the training device."""

    targets: torch.Tensor  # (n, K)
    weights: torch.Tensor  # (n,)
    log_prior: torch.Tensor  # (K,)
    device: torch.device
    hard: torch.Tensor | None = None  # (n,) argmax of the targets, for the train accuracy

    def __post_init__(self) -> None:
        if self.hard is None:
            self.hard = self.targets.argmax(1)

    def batch(self, rows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(targets (B, K), weights (B,), hard labels (B,)) of `rows` (a slice or indices)."""
        return self.targets[rows], self.weights[rows], self.hard[rows]

    def reordered(self, perm: torch.Tensor) -> Problem:
        """The same problem with its rows in `perm`'s order (one gather per epoch)."""
        return Problem(self.targets[perm], self.weights[perm], self.log_prior, self.device,
                       hard=self.hard[perm])  # fmt: skip


def select_rows(data, targets, weights, indices):
    num_classes = len(data.classes)
    if targets is None:
        targets = one_hot_targets(data.labels, num_classes)
    if weights is None:
        weights = np.ones(data.num_samples, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float32)
    rows = np.arange(data.num_samples) if indices is None else np.asarray(indices, dtype=np.int64)
    # Unlabeled rows and dropped samples (weight 0) carry no signal: leave them out.
    keep = (weights[rows] > 0) & (targets[rows].sum(1) > 0)
    rows = rows[keep]
    if len(rows) == 0:
        raise UserError("no training samples left: every sample is unlabeled or has weight 0")
    return rows, targets[rows], weights[rows]


def make_problem(tgt: np.ndarray, wts: np.ndarray, device: torch.device) -> Problem:
    """Targets (n, K), weights (n,) and their class prior, on the training device."""
    return Problem(
        targets=torch.from_numpy(tgt).to(device),
        weights=torch.from_numpy(wts).to(device),
        log_prior=log_class_prior(torch.from_numpy(tgt), torch.from_numpy(wts)).to(device),
        device=device,
    )
