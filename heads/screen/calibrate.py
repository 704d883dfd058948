"""DFR-like calibration subset: class-balanced, high-confidence samples for a last-layer retrain.

    rows = calibration_subset(result.state, result.p_clean, labels, num_classes=K)

After Deep Feature Reweighting (Kirichenko et al. 2023) and its group-label-free variants
(2024): the last layer is retrained on a balanced subset chosen automatically, here the
`m` most trusted clean samples of every class, with `m` the median clean count per class
(a class with fewer clean samples gives all it has). Notation: N samples, K classes.
"""

from __future__ import annotations

import numpy as np

from heads.screen.partition import CLEAN


def calibration_subset(
    state: np.ndarray,
    p_clean: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    per_class: int | None = None,
) -> np.ndarray:
    """(n,) sorted indices of the most trusted clean samples, at most `per_class` per class.

    Args:
        state: (N,) screening states; only CLEAN samples are eligible.
        p_clean: (N,) trust used to rank samples inside a class (higher first).
        labels: (N,) given labels in [0, K).
        per_class: cap per class; None = median of the per-class clean counts (>= 1).
    """
    if not state.shape == p_clean.shape == labels.shape:
        raise ValueError(f"shapes disagree: {state.shape}, {p_clean.shape}, {labels.shape}")
    clean = np.flatnonzero(state == CLEAN)
    counts = np.bincount(labels[clean], minlength=num_classes)
    if per_class is None:
        per_class = max(1, int(np.median(counts[counts > 0]))) if clean.size else 1
    order = clean[np.lexsort((-p_clean[clean], labels[clean]))]  # by class, most trusted first
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, counts)
    return np.sort(order[rank < per_class])
