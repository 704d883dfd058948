"""`candidate-labels`: ambiguous samples learn a candidate set with a partial-label loss.

    ScreenConfig(extras=("candidate-labels",))
    targets[amb] = candidate_targets(labels[amb], [knn_top[amb], model_top[amb]], K)
    per = partial_label_loss(logp, candidate_mask)       # -log sum_{c in S} p_c

An ambiguous sample's target becomes uniform over {given, kNN top, model top}; the
screening's probe learns such rows with -log(sum of the candidates' probabilities), and any
other trainer reads them as plain soft targets (uniform over the candidates), which is why
this changes what an external `train_fn` receives. Bench top-1 within +-0.1 of off in all
six settings (it touches only the ~0.3% ambiguous samples): off by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from heads.screen.extras.base import Extra, RoundView, register_extra
from heads.screen.partition import AMBIGUOUS, Partition
from heads.screen.probe import ProbeHooks

# Tolerance for "uniform over its support" (targets are float32).
_EPS = 1e-6


@dataclass
class CandidateConfig:
    # Signals whose preferred class joins the given label in the candidate set: the
    # neighbours and the round's model, the two that were trained on or vote over labels.
    voters: tuple[str, ...] = ("knn", "model")


def candidate_targets(given: np.ndarray, tops: list[np.ndarray], num_classes: int) -> np.ndarray:
    """(A, K) float32 rows uniform over each sample's candidate set {given, *tops}."""
    mask = np.zeros((len(given), num_classes), np.float32)
    rows = np.arange(len(given))
    for choice in (given, *tops):
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


def partial_label_rows(per: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor):
    """(B,) `per` with candidate-label rows replaced by their partial-label loss."""
    logp = torch.log_softmax(logits, dim=1)  # (B, K)
    return torch.where(candidate_rows(targets), partial_label_loss(logp, targets), per)


@register_extra("candidate-labels")
class CandidateLabels(Extra):
    """Ambiguous samples' targets: uniform over candidates, learnt by the partial-label loss."""

    Config = CandidateConfig

    def probe_hooks(self) -> ProbeHooks:
        return ProbeHooks(loss=partial_label_rows)

    def on_targets(self, targets, weights, part: Partition, view: RoundView):
        amb = np.flatnonzero(part.state == AMBIGUOUS)
        tops = [view.evidence[name].voter[amb] for name in self.cfg.voters]
        targets[amb] = candidate_targets(view.inputs.labels[amb], tops, view.inputs.num_classes)
        return targets, weights
