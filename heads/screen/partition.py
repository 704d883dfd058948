"""Split samples into clean / ambiguous / relabeled / dropped / out-of-set, protecting the tail.

    part = partition(labels, combined, p_clean, consensus, voters, cfg=cfg)

Inputs (N samples, K classes): `combined` (N,) mean percentile rank of the given-label
scores of all signals; `p_clean` (N,) mixture posterior of the clean component; `consensus`
(N, K) mean of the probability-like signals; `voters` (S, N) each independent signal's
preferred class. A noisy sample is relabeled only when every voter names the same new class
and the consensus for it clears a bar that is stricter for head classes; a noisy sample no
class explains is out-of-set; the rest of the noisy ones are dropped (or, with
`soft_relabel`, learn the consensus over the other classes at reduced weight).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from heads.classes import class_ranks
from heads.screen.signals import best_other_class, for_row_blocks

if TYPE_CHECKING:  # the config imports the extras, which import this module
    from heads.screen.config import ScreenConfig

STATES = ("clean", "ambiguous", "relabeled", "dropped", "out_of_set")
CLEAN, AMBIGUOUS, RELABELED, DROPPED, OUT_OF_SET = range(len(STATES))


@dataclass
class Partition:
    """state (N,) int8 index into STATES; proposed (N,) label after screening (-1 = none)."""

    state: np.ndarray
    proposed: np.ndarray


def percentile_ranks(score: np.ndarray) -> np.ndarray:
    """(N,) rank of each score among all, scaled to [0, 1] (ties broken by order)."""
    ranks = np.empty(len(score), np.float32)
    ranks[np.argsort(score, kind="stable")] = np.arange(len(score), dtype=np.float32)
    return ranks / max(len(score) - 1, 1)


def combine_scores(scores: dict[str, np.ndarray]) -> np.ndarray:
    """(N,) mean percentile rank over signals: puts losses, cosines and votes on one scale."""
    if not scores:
        raise ValueError("need at least one signal")
    return np.mean([percentile_ranks(s) for s in scores.values()], axis=0).astype(np.float32)


def relabel_bars(counts: np.ndarray, cfg: ScreenConfig) -> np.ndarray:
    """(K,) consensus a sample needs to move INTO each class: higher for bigger classes."""
    pct = percentile_ranks(counts.astype(np.float64))  # 0 for the smallest, 1 for the largest
    return cfg.relabel_bar_tail + (cfg.relabel_bar_head - cfg.relabel_bar_tail) * pct


def partition(
    labels: np.ndarray,
    combined: np.ndarray,
    p_clean: np.ndarray,
    consensus: np.ndarray,
    voters: np.ndarray,
    *,
    cfg: ScreenConfig,
) -> Partition:
    """Assign every sample a state and a proposed label (see module docstring)."""
    n, k = consensus.shape
    if not (labels.shape == combined.shape == p_clean.shape == (n,)) or voters.shape[1] != n:
        raise ValueError(
            f"shapes disagree: labels {labels.shape}, combined {combined.shape}, "
            f"p_clean {p_clean.shape}, consensus {consensus.shape}, voters {voters.shape}"
        )
    counts = np.bincount(labels, minlength=k)
    state = np.full(n, AMBIGUOUS, np.int8)
    state[p_clean >= cfg.clean_posterior] = CLEAN
    noisy = p_clean < cfg.noisy_posterior

    best, best_p, top_p = best_other_class(consensus, labels)
    # Every independent voter must name the new class: a relabel is the costliest mistake.
    agree = (voters == best[None, :]).all(0)
    relabel = noisy & agree & (best_p >= relabel_bars(counts, cfg)[best])
    out_of_set = noisy & ~relabel & (top_p < cfg.out_of_set_bar)
    state[noisy] = DROPPED
    state[relabel] = RELABELED
    state[out_of_set] = OUT_OF_SET
    state = protect_tail(state, labels, combined, k, cfg)

    proposed = np.where(state == RELABELED, best, labels)
    proposed[(state == DROPPED) | (state == OUT_OF_SET)] = -1
    return Partition(state=state, proposed=proposed.astype(np.int64))


def protect_tail(state, labels, combined, num_classes: int, cfg: ScreenConfig) -> np.ndarray:
    """Cap the noisy share of every class and keep its `min_keep` most trusted samples clean."""
    state = state.copy()
    order, rank = class_ranks(-combined, labels, num_classes)  # by class, most trusted first
    counts = np.bincount(labels, minlength=num_classes)
    state[rank < np.minimum(cfg.min_keep, counts)[labels]] = CLEAN

    # Noisy beyond the cap: the most trusted of them go back to ambiguous.
    removed = order[state[order] >= RELABELED]  # by class, most trusted first
    n_removed = np.bincount(labels[removed], minlength=num_classes)
    excess = n_removed - np.floor(cfg.max_noisy_share * counts).astype(np.int64)
    first = np.concatenate([[0], np.cumsum(n_removed)[:-1]])
    nth = np.arange(len(removed)) - np.repeat(first, n_removed)
    state[removed[nth < excess[labels[removed]]]] = AMBIGUOUS
    return state


def build_targets(
    labels: np.ndarray,
    part: Partition,
    p_clean: np.ndarray,
    consensus: np.ndarray,
    *,
    cfg: ScreenConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) float32 soft targets and (N,) float32 weights from a partition."""
    n, k = consensus.shape
    targets = np.empty((n, k), np.float32)
    targets.fill(0.0)  # np.zeros' lazy pages, touched row by row: 1.7 s vs 0.4 s (300k x 1500)
    keep_label = part.state == CLEAN
    targets[np.flatnonzero(keep_label), labels[keep_label]] = 1.0
    moved = part.state == RELABELED
    targets[np.flatnonzero(moved), part.proposed[moved]] = 1.0
    amb = np.flatnonzero(part.state == AMBIGUOUS)
    if cfg.soft_targets:

        def soft_block(part_rows):
            rows = amb[part_rows]
            trust = p_clean[rows, None]  # (A, 1)
            soft = (1 - trust) * consensus[rows]
            soft[np.arange(len(rows)), labels[rows]] += trust[:, 0]
            targets[rows] = soft

        for_row_blocks(soft_block, len(amb))
    else:
        targets[amb, labels[amb]] = 1.0
    weights = np.zeros(n, np.float32)
    weights[keep_label | moved] = 1.0
    weights[amb] = cfg.ambiguous_weight
    if cfg.soft_relabel:
        _soft_relabel(targets, weights, labels, part, consensus)
    return targets, weights


def _soft_relabel(targets, weights, labels, part: Partition, consensus: np.ndarray) -> None:
    """NeaR-style: a dropped (not out-of-set) sample learns the consensus over the other
    classes, weighted by how peaked it is, instead of being thrown away (in place)."""
    dropped = np.flatnonzero(part.state == DROPPED)

    def block(part_rows):  # row blocks on all cores: 50k+ rows of K at mission size
        rows = dropped[part_rows]
        soft = consensus[rows]  # (R, K), a copy
        soft[np.arange(len(rows)), labels[rows]] = 0.0
        soft /= np.maximum(soft.sum(1, keepdims=True), 1e-12)
        targets[rows] = soft
        weights[rows] = soft.max(1)

    for_row_blocks(block, len(dropped))
