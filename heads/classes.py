"""Per-class helpers shared by the heads, the screening and the metrics, each written once.

    groups = class_groups({"0001": 120, "0002": 7})        # class -> "head" / "medium" / "tail"
    members = class_members(np.array([120, 7, 30]))         # "head" -> array([0]), ...
    order, rank = class_ranks(-trust, labels, num_classes=K)  # 0 = most trusted of its class
    protos = class_prototypes(x, targets, weights)          # (K, D) unit class means

Notation: N samples, K classes, D embedding width; `labels` (N,) int in [0, K).
"""

from __future__ import annotations

import numpy as np
import torch

GROUPS = ("head", "medium", "tail")
# Rows per one-hot block on CUDA: a (65536, K) one-hot is 0.4 GB at K = 1500.
_ONE_HOT_ROWS = 65536


def class_groups(counts: dict) -> dict:
    """class -> head / medium / tail: thirds of the classes sorted by count (ties by name).

    Thirds rather than fixed thresholds (ImageNet-LT's 100/20) because the datasets here
    range from 70 to 600 images per class."""
    order = sorted(counts, key=lambda c: (-counts[c], c))
    n = len(order)
    return {c: GROUPS[min(3 * i // max(n, 1), 2)] for i, c in enumerate(order)}


def class_members(counts: np.ndarray) -> dict[str, np.ndarray]:
    """ "head" / "medium" / "tail" -> (n,) class indices, by `class_groups` of (K,) counts
    (ties by class index)."""
    group_of = class_groups({c: int(n) for c, n in enumerate(counts)})
    return {g: np.array([c for c, h in group_of.items() if h == g], np.int64) for g in GROUPS}


def class_ranks(key: np.ndarray, labels: np.ndarray, num_classes: int):
    """Every sample's position inside its class when the class is sorted by ascending `key`.

    Returns:
        order: (N,) sample indices sorted by class, then by key (ties by index).
        rank: (N,) int64 position of each sample among its class, 0 = smallest key; pass
            `-score` to rank the highest score first.
    """
    order = np.lexsort((key, labels))
    counts = np.bincount(labels, minlength=num_classes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(labels), np.int64)
    rank[order] = np.arange(len(labels)) - np.repeat(starts, counts)
    return order, rank


def class_prototypes(
    x: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    num_classes: int | None = None,
) -> torch.Tensor:
    """(K, D) unit means of the rows of (N, D) `x` per class; zero rows for empty classes.

    Args:
        x: (N, D) rows (unit embeddings, or centred ones for the probe).
        targets: (N, K) soft targets (each row's share of every class), or (N,) int64 hard
            labels, which then need `num_classes`.
        weights: (N,) per-sample weights of soft targets (None = all 1).
    """
    if targets.ndim == 2:
        w = x if weights is None else x * weights[:, None]
        means = targets.T @ w  # (K, D); no (N, K) temporary
    elif num_classes is None:
        raise ValueError("hard labels need num_classes")
    else:
        means = _label_sums(x, targets, num_classes)
    return torch.nn.functional.normalize(means, dim=1, eps=1e-12)


def _label_sums(x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, D) sums of the rows of each class, deterministic on every device."""
    sums = torch.zeros((num_classes, x.shape[1]), dtype=torch.float32, device=x.device)
    if x.device.type == "cpu":
        sums.index_add_(0, labels, x)
    else:  # CUDA index_add_ sums with atomics (run-to-run noise); a one-hot product does not
        for lo in range(0, len(x), _ONE_HOT_ROWS):
            hot = torch.nn.functional.one_hot(labels[lo : lo + _ONE_HOT_ROWS], num_classes)
            sums += hot.to(x.dtype).T @ x[lo : lo + _ONE_HOT_ROWS]
    return sums


def one_hot_targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, K) float32 one-hot of the given labels; unlabeled rows (-1) are all zero."""
    targets = np.zeros((len(labels), num_classes), dtype=np.float32)
    ok = labels >= 0
    targets[np.nonzero(ok)[0], labels[ok]] = 1.0
    return targets
