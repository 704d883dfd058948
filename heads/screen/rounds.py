"""Screening rounds: score every sample, partition, retrain cross-fitted, repeat.

    result = run_screening(ScreenInputs(embed, labels), ScreenConfig(), train_fn, out_dir)

Round 0 uses only the frozen embeddings (kNN votes, an out-of-fold probe, trimmed-mean
prototypes, zero-shot text when given). Round r >= 1 trains `train_fn` on each half of the
data with the current targets and weights and scores the other half (so no sample is judged
by a model that saw its label), then re-partitions. Rounds stop after `cfg.rounds` or when
fewer than `cfg.stop_change` of the samples change state.

`train_fn(train_idx (n,), targets (N, K) float32, weights (N,) float32) -> predict_fn`, with
`predict_fn(idx (m,)) -> (m, K)` balanced logits. Without one, the probe of `probe.py` is used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.faults import fault_point
from heads.screen import signals
from heads.screen.config import ScreenConfig
from heads.screen.lowconf import candidate_targets
from heads.screen.mixture import clean_posterior
from heads.screen.partition import AMBIGUOUS, Partition, build_targets, combine_scores, partition
from heads.screen.probe import cross_fit_logits, one_hot, probe_train_fn
from heads.screen.report import save_round, summarise, write_summary
from heads.screen.verify import relabel_by_clean_probe, verify_relabels

log = logging.getLogger(__name__)


@dataclass
class ScreenInputs:
    """What screening reads: (N, D) unit embeddings, (N,) given labels, optional (K, D) text."""

    embed: np.ndarray
    labels: np.ndarray
    num_classes: int
    text_embed: np.ndarray | None = None

    def __post_init__(self):
        self.embed = np.ascontiguousarray(self.embed, dtype=np.float32)
        self.labels = np.asarray(self.labels, np.int64)
        signals._check(self.embed, self.labels, self.num_classes)
        if self.text_embed is not None and self.text_embed.shape != (
            self.num_classes,
            self.embed.shape[1],
        ):
            raise ValueError(f"text_embed must be (K, D), got {self.text_embed.shape}")


@dataclass
class ScreenResult:
    """Final partition: state (N,) int8, targets (N, K), weights (N,), plus per-round summary."""

    state: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    proposed: np.ndarray
    p_clean: np.ndarray
    combined: np.ndarray
    scores: dict[str, np.ndarray]
    consensus: np.ndarray
    rounds: list[dict] = field(default_factory=list)


@dataclass
class _Fixed:
    """Round-0 signals that do not change between rounds (independent of the student)."""

    scores: dict[str, np.ndarray]
    probs: list[np.ndarray]  # (N, K) each: neighbour votes, zero-shot
    voters: list[np.ndarray]  # (N,) each: preferred class of kNN and prototypes


def frozen_signals(inputs: ScreenInputs, cfg: ScreenConfig) -> _Fixed:
    """kNN agreement, prototype margin and zero-shot agreement from the frozen embeddings."""
    x, y, k = inputs.embed, inputs.labels, inputs.num_classes
    nbr_idx, nbr_sim = signals.nearest_neighbours(
        x, k=min(cfg.knn_k, len(y) - 1), device=cfg.device
    )
    votes = signals.knn_label_votes(
        nbr_idx, nbr_sim, y, num_classes=k, temperature=cfg.knn_temperature, device=cfg.device
    )
    protos = signals.robust_prototypes(x, y, num_classes=k, trim=cfg.trim, device=cfg.device)
    proto_margin, proto_choice = signals.prototype_scores(x, y, protos, device=cfg.device)
    scores = {"knn": signals.given_label_score(votes, y), "prototype": proto_margin}
    probs = [votes]
    if inputs.text_embed is not None:
        temperature = cfg.zero_shot_temperature
        if temperature is None:  # calibrate on the given labels (see fit_temperature)
            temperature = signals.fit_temperature(x @ inputs.text_embed.T, y)
        zero_shot = signals.zero_shot_probs(
            x, inputs.text_embed, temperature=temperature, device=cfg.device
        )
        scores["zero_shot"] = signals.given_label_score(zero_shot, y)
        probs.append(zero_shot)
    return _Fixed(scores, probs, [votes.argmax(1), proto_choice])


def _screen(inputs, cfg, fixed: _Fixed, model_logits: np.ndarray):
    """One partition from the fixed signals and the cross-fitted model's (N, K) logits."""
    y = inputs.labels
    probs = signals.model_probs(model_logits)
    scores = {**fixed.scores, "model": signals.given_label_score(probs, y)}
    if cfg.margin_scores:
        scores["model"] = signals.label_margin(probs, y)
        scores["knn"] = signals.label_margin(fixed.probs[0], y)
    combined = combine_scores(scores, y if cfg.rank_within_class else None)
    p_clean = clean_posterior(
        combined, y, num_classes=inputs.num_classes, strength=cfg.pool_strength
    )
    consensus = _mean_of(probs, *fixed.probs)  # (N, K)
    voters = np.stack([signals.row_argmax(probs), *fixed.voters])  # (S, N)
    part = partition(y, combined, p_clean, consensus, voters, cfg=cfg)
    if cfg.verify_relabels:
        part = verify_relabels(part, inputs.embed, y, num_classes=inputs.num_classes, cfg=cfg)
    if cfg.clean_probe_relabel:
        part = relabel_by_clean_probe(part, inputs.embed, y, fixed.voters[0],
                                      num_classes=inputs.num_classes, cfg=cfg)  # fmt: skip
    targets, weights = build_targets(y, part, p_clean, consensus, cfg=cfg)
    if cfg.candidate_labels:  # ambiguous samples learn a candidate set (partial-label loss)
        amb = np.flatnonzero(part.state == AMBIGUOUS)
        targets[amb] = candidate_targets(
            y[amb], fixed.voters[0][amb], probs[amb].argmax(1), inputs.num_classes
        )
    return part, targets, weights, p_clean, combined, scores, consensus


def _mean_of(first: np.ndarray, *rest: np.ndarray) -> np.ndarray:
    """np.mean of (N, K) arrays, same floats, in row blocks on all cores and without stacking
    them (the stack is 5.4 GB at 300k x 1500)."""
    total = np.empty(first.shape, np.float32)

    def block(rows):
        part = np.array(first[rows], np.float32, copy=True)
        for a in rest:
            part += a[rows]
        part /= 1 + len(rest)
        total[rows] = part

    signals.for_row_blocks(block, len(first))
    return total


def run_screening(
    inputs: ScreenInputs,
    cfg: ScreenConfig | None = None,
    train_fn: Callable | None = None,
    out_dir: str | Path | None = None,
) -> ScreenResult:
    """Rounds 0..cfg.rounds (see module docstring); every round saved under `out_dir`."""
    cfg = cfg or ScreenConfig()
    train_fn = train_fn or probe_train_fn(inputs.embed, cfg.probe)
    y, k = inputs.labels, inputs.num_classes
    start = time.perf_counter()
    fixed = frozen_signals(inputs, cfg)
    probe_fn = probe_train_fn(inputs.embed, cfg.probe)
    hard = one_hot(y, k)
    logits = cross_fit_logits(
        probe_fn, y, hard, np.ones(len(y), np.float32), folds=cfg.folds, seed=cfg.seed
    )
    history: list[dict] = []
    prev: Partition | None = None
    result = None
    for r in range(cfg.rounds + 1):
        if r > 0:
            logits = cross_fit_logits(
                train_fn, y, result.targets, result.weights, folds=2, seed=cfg.seed + r
            )
        part, targets, weights, p_clean, combined, scores, consensus = _screen(
            inputs, cfg, fixed, logits
        )
        changed = 1.0 if prev is None else float((part.state != prev.state).mean())
        result = ScreenResult(
            part.state, targets, weights, part.proposed, p_clean, combined, scores, consensus
        )
        entry = {
            "round": r,
            "changed": changed,
            "seconds": round(time.perf_counter() - start, 3),
            **summarise(part.state, y, k),
        }
        history.append(entry)
        log.info("screening round %d: %s (changed %.2f%%)", r, entry["all"], 100 * changed)
        if out_dir is not None:
            save_round(
                Path(out_dir), r, state=part.state, weights=weights, targets=targets,
                proposed=part.proposed, labels=y,
            )  # fmt: skip
            write_summary(Path(out_dir), history)
        fault_point("screen-round")
        prev = part
        if r > 0 and changed < cfg.stop_change:
            break
    result.rounds = history
    return result
