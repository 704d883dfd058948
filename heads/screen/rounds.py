"""Screening rounds: score every sample, partition, retrain cross-fitted, repeat.

    result = run_screening(ScreenInputs(embed, labels), ScreenConfig(), train_fn, out_dir)

Round 0 uses only the frozen embeddings (kNN votes, an out-of-fold probe, trimmed-mean
prototypes, zero-shot text when given). Round r >= 1 trains `train_fn` on each half of the
data with the current targets and weights and scores the other half (so no sample is judged
by a model that saw its label), then re-partitions. Rounds stop after `cfg.rounds` or when
fewer than `cfg.stop_change` of the samples change state. The signals are the registered
ones of `evidence.py`; the extras named in `cfg.extras` hook into each round and the result.

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
from heads.screen import extras as extras_lib
from heads.screen import signals
from heads.screen.config import ScreenConfig
from heads.screen.evidence import Evidence, frozen_evidence, student_evidence
from heads.screen.extras import Extra, RoundView
from heads.screen.mixture import clean_posterior
from heads.screen.partition import build_targets, combine_scores, partition
from heads.screen.probe import cross_fit_logits, one_hot, probe_train_fn
from heads.screen.relabel import relabel
from heads.screen.report import save_mixture, save_round, summarise, write_summary

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
    """Final partition: state (N,) int8, targets (N, K), weights (N,), plus per-round summary;
    with the relabeling stage (`ScreenConfig.mixture`), its proposed class (N,) and
    that class's probability."""

    state: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    proposed: np.ndarray
    p_clean: np.ndarray
    combined: np.ndarray
    scores: dict[str, np.ndarray]
    consensus: np.ndarray
    rounds: list[dict] = field(default_factory=list)
    mixture_class: np.ndarray | None = None
    mixture_prob: np.ndarray | None = None


def screen_round(inputs: ScreenInputs, cfg: ScreenConfig, fixed: dict[str, Evidence],
                 model_logits: np.ndarray, extras: list[Extra] = ()) -> ScreenResult:  # fmt: skip
    """One partition from the frozen evidence and the cross-fitted model's (N, K) logits."""
    y = inputs.labels
    student = student_evidence(inputs, cfg, model_logits)
    evidence = {**fixed, **student}  # registration order: the order scores are combined in
    view = RoundView(inputs, cfg, evidence)
    scores = {name: e.score for name, e in evidence.items()}
    combined = combine_scores(scores)
    p_clean = clean_posterior(
        combined, y, num_classes=inputs.num_classes, strength=cfg.pool_strength
    )
    # The student's distribution and vote first: a fixed sum order keeps results reproducible.
    ordered = [*student.values(), *fixed.values()]
    consensus = _mean_of(*[e.probs for e in ordered if e.probs is not None])  # (N, K)
    voters = np.stack([e.voter for e in ordered if e.voter is not None])  # (S, N)
    part = partition(y, combined, p_clean, consensus, voters, cfg=cfg)
    for extra in extras:
        part = extra.on_partition(part, view)
    targets, weights = build_targets(y, part, p_clean, consensus, cfg=cfg)
    for extra in extras:
        targets, weights = extra.on_targets(targets, weights, part, view)
    return ScreenResult(
        part.state, targets, weights, part.proposed, p_clean, combined, scores, consensus
    )


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
    """Rounds 0..cfg.rounds (see module docstring); every round saved under `out_dir`.

    The extras named in `cfg.extras` act inside every round and, once, on the final result."""
    cfg = cfg or ScreenConfig()
    extras = extras_lib.build(cfg.extras)
    probe_fn = probe_train_fn(inputs.embed, cfg.probe, device=cfg.device, seed=cfg.seed,
                              hooks=extras_lib.probe_hooks(extras))  # fmt: skip
    train_fn = train_fn or probe_fn
    y, k = inputs.labels, inputs.num_classes
    start = time.perf_counter()
    fixed = frozen_evidence(inputs, cfg)
    logits = cross_fit_logits(
        probe_fn, y, one_hot(y, k), np.ones(len(y), np.float32), folds=cfg.folds, seed=cfg.seed
    )
    history: list[dict] = []
    result = None
    for r in range(cfg.rounds + 1):
        if r > 0:
            logits = cross_fit_logits(
                train_fn, y, result.targets, result.weights, folds=2, seed=cfg.seed + r
            )
        prev, result = result, screen_round(inputs, cfg, fixed, logits, extras)
        changed = 1.0 if prev is None else float((result.state != prev.state).mean())
        history.append(_record(r, result, inputs, changed, time.perf_counter() - start, out_dir))
        if out_dir is not None:
            write_summary(Path(out_dir), history)
        fault_point("screen-round")
        if r > 0 and changed < cfg.stop_change:
            break
    if cfg.mixture is not None:
        result = _relabel_stage(inputs, cfg, result, fixed, logits, history, out_dir)
    for extra in extras:
        result = extra.on_result(result, inputs)
    result.rounds = history
    return result


def _relabel_stage(inputs, cfg, result, fixed, logits, history, out_dir):
    """The folder-mixture stage on the last round's result; the last round's distributions
    are rebuilt only where its gate or likelihood reads them. Saved under `out_dir` as
    `mixture/` (the round files and the proposed class and its probability)."""
    mix = cfg.mixture.for_screening(cfg.seed, cfg.device)
    signals = None
    if mix.gate != "off" or mix.use_student:
        evidence = {**fixed, **student_evidence(inputs, cfg, logits)}
        signals = {name: e.probs for name, e in evidence.items() if e.probs is not None}
    t0 = time.perf_counter()
    out = relabel(result, inputs, mix, signals)
    moved = int((out.mixture_class != inputs.labels).sum())
    entry = {"moved": moved, "seconds": round(time.perf_counter() - t0, 3)}
    log.info("folder mixture: %d samples named another class than their folder (%.1fs)",
             moved, entry["seconds"])  # fmt: skip
    if out_dir is not None:
        save_mixture(Path(out_dir), out, inputs.labels)
        write_summary(Path(out_dir), history, entry)
    return out


def _record(r: int, result: ScreenResult, inputs: ScreenInputs, changed: float,
            seconds: float, out_dir: str | Path | None) -> dict:  # fmt: skip
    """Round `r`'s summary entry (logged), and its arrays saved under `out_dir`."""
    y, k = inputs.labels, inputs.num_classes
    entry = {"round": r, "changed": changed, "seconds": round(seconds, 3),
             **summarise(result.state, y, k)}  # fmt: skip
    log.info("screening round %d: %s (changed %.2f%%)", r, entry["all"], 100 * changed)
    if out_dir is not None:
        save_round(
            Path(out_dir), r, state=result.state, weights=result.weights,
            targets=result.targets, proposed=result.proposed, labels=y,
        )  # fmt: skip
    return entry
