"""Row selection: which rows of the store a fit trains on, with what targets and weights.

    sel = select_rows(data, targets, weights, indices)   # targets None: the store's labels
    problem = make_problem(sel, device)
    t, w, hard = problem.batch(rows_on_device)           # (B, K), (B,), (B,)

Unlabeled rows and weight-0 rows carry no signal and are left out; the rest become a
`Problem`: targets, weights and the class prior on the training device. Hard labels stay
index targets, (n,) int64, and each batch's one-hot is built on the device: at 1M x 1000 a
dense one-hot would be 4 GB made on the host and copied three times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import UserError
from heads import classes
from heads.checkpoint import fingerprint
from heads.losses import log_prior_of_counts


@dataclass
class Selection:
    """The rows a fit trains on: `rows` (n,) into the store, and per row either a hard label
    (`labels` (n,) int64) or soft targets (`soft` (n, K) float32), and `weights` (n,)."""

    rows: np.ndarray
    weights: np.ndarray
    num_classes: int
    labels: np.ndarray | None = None
    soft: np.ndarray | None = None

    def class_counts(self) -> np.ndarray:
        """(K,) weighted count of every class, summed on the host (deterministic)."""
        if self.labels is not None:
            return np.bincount(self.labels, self.weights, minlength=self.num_classes)
        return (self.soft * self.weights[:, None]).sum(0)

    def fingerprint(self) -> str:
        """What a checkpoint must have been made from to be resumed (a hash of every byte:
        computed only when a checkpoint folder is asked for)."""
        targets = self.labels if self.labels is not None else self.soft
        return fingerprint(self.rows, targets, self.weights)


def select_rows(data, targets, weights, indices) -> Selection:
    """The trainable rows of `indices` (default all): labelled, or with non-zero targets, and
    weight > 0; one line when none is left."""
    num_classes = len(data.classes)
    rows = np.arange(data.num_samples) if indices is None else np.asarray(indices, dtype=np.int64)
    w_all = np.ones(data.num_samples, np.float32) if weights is None else weights
    w = np.asarray(w_all, dtype=np.float32)[rows]
    if targets is None:
        labels = np.asarray(data.labels, dtype=np.int64)[rows]
        keep = (w > 0) & (labels >= 0)
    else:
        soft = np.asarray(targets, dtype=np.float32)
        soft = soft if indices is None else soft[rows]
        keep = (w > 0) & (soft.sum(1) > 0)
    if not keep.any():
        raise UserError("no training samples left: every sample is unlabeled or has weight 0")
    if targets is None:
        return Selection(rows[keep], w[keep], num_classes, labels=labels[keep])
    soft = soft if keep.all() else soft[keep]  # no copy of an (N, K) array that is all kept
    return Selection(rows[keep], w[keep], num_classes, soft=soft)


@dataclass
class Problem:
    """Everything one epoch needs, on the training device: hard `labels` (n,) or `soft`
    targets (n, K), `weights` (n,), `log_prior` (K,), and `hard` (n,) for the accuracy."""

    weights: torch.Tensor
    log_prior: torch.Tensor
    device: torch.device
    num_classes: int
    labels: torch.Tensor | None = None
    soft: torch.Tensor | None = None
    hard: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.hard is None:
            self.hard = self.labels if self.labels is not None else self.soft.argmax(1)

    def batch(self, rows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(targets (B, K), weights (B,), hard labels (B,)) of `rows` (a slice or indices)."""
        if self.labels is not None:
            targets = F.one_hot(self.labels[rows], self.num_classes).to(torch.float32)
        else:
            targets = self.soft[rows]
        return targets, self.weights[rows], self.hard[rows]

    def reordered(self, perm: torch.Tensor) -> Problem:
        """The same problem with its rows in `perm`'s order (one gather per epoch)."""

        def take(a):
            return None if a is None else a[perm]

        return Problem(take(self.weights), self.log_prior, self.device, self.num_classes,
                       take(self.labels), take(self.soft), take(self.hard))  # fmt: skip


def make_problem(sel: Selection, device: torch.device) -> Problem:
    """The selection's targets, weights and class prior, on the training device."""

    def on_device(a):
        return None if a is None else torch.from_numpy(a).to(device)

    weights, soft = on_device(sel.weights), on_device(sel.soft)
    if soft is None:  # integer sums for unit weights: any order gives the same float32
        counts = torch.from_numpy(sel.class_counts().astype(np.float32)).to(device)
    else:  # the reduction the dense path always used, so seeded CPU runs keep their bits
        counts = (weights[:, None] * soft).sum(0)
    return Problem(weights, log_prior_of_counts(counts), device, sel.num_classes,
                   on_device(sel.labels), soft)  # fmt: skip


def prototypes(embed: torch.Tensor, problem: Problem, counts: np.ndarray) -> torch.Tensor:
    """(K, D) weighted unit class means of the normalised (n, D) embeddings, on their device;
    a class with no weight (`counts` (K,) <= 0) gets the global mean direction, so its logit
    starts neutral."""
    x = F.normalize(embed.float(), dim=1, eps=1e-12)  # (n, D)
    w = problem.weights
    if problem.labels is not None:
        protos = classes.class_prototypes(x * w[:, None], problem.labels,
                                          num_classes=problem.num_classes)  # fmt: skip
    else:
        protos = classes.class_prototypes(x, problem.soft, w)
    empty = torch.from_numpy(counts <= 0).to(x.device)
    if empty.any():
        protos[empty] = F.normalize(x.mean(0), dim=0, eps=1e-12)
    return protos
