"""The screening's signals, registered by name: what each says about every sample.

    fixed = frozen_evidence(inputs, cfg)                 # round 0: {name: Evidence}
    student = student_evidence(inputs, cfg, logits)      # every round, from (N, K) logits

A signal gives an `Evidence`: a score of agreement with the given label (every signal; they
are combined by percentile rank), optionally a distribution over classes (joins the
consensus that relabels and builds soft targets) and a preferred class (joins the relabel
vote). Frozen signals read only the frozen embeddings (SRRS: a judge that is not the
student) and are computed once; student signals read the cross-fitted model of the round.
Registration order is the order scores are combined in. Notation: N samples, K classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.registry import Registry
from heads.screen import signals


@dataclass
class Evidence:
    """One signal's view of every sample."""

    score: np.ndarray  # (N,) agreement with the given label, higher = more trusted
    probs: np.ndarray | None = None  # (N, K) distribution over classes, or None
    voter: np.ndarray | None = None  # (N,) preferred class, or None


@dataclass(frozen=True)
class Signal:
    """`compute(inputs, cfg, logits) -> Evidence | None` (None: not available, e.g. no text);
    `student`: reads the round's cross-fitted logits (else frozen, computed once)."""

    compute: Callable
    student: bool


SIGNALS: Registry[Signal] = Registry("screening signal")


def register_signal(name: str, *, student: bool = False):
    """Decorator: register `fn(inputs, cfg, logits) -> Evidence | None` as signal `name`."""

    def wrap(fn):
        SIGNALS.register(name)(Signal(fn, student))
        return fn

    return wrap


def _gather(inputs, cfg, logits, student: bool) -> dict[str, Evidence]:
    out = {}
    for name, signal in SIGNALS.items():
        if signal.student == student:
            evidence = signal.compute(inputs, cfg, logits)
            if evidence is not None:
                out[name] = evidence
    return out


def frozen_evidence(inputs, cfg) -> dict[str, Evidence]:
    """Every frozen signal's evidence, in registration order (computed once, in round 0)."""
    return _gather(inputs, cfg, None, student=False)


def student_evidence(inputs, cfg, logits: np.ndarray) -> dict[str, Evidence]:
    """Every student signal's evidence from the round's (N, K) cross-fitted logits."""
    return _gather(inputs, cfg, logits, student=True)


@register_signal("knn")
def knn_evidence(inputs, cfg, logits) -> Evidence:
    """Similarity-weighted label votes of the `cfg.knn_k` nearest neighbours (NeaR, DINO)."""
    x, y = inputs.embed, inputs.labels
    nbr_idx, nbr_sim = signals.nearest_neighbours(
        x, k=min(cfg.knn_k, len(y) - 1), device=cfg.device
    )
    votes = signals.knn_label_votes(
        nbr_idx, nbr_sim, y, num_classes=inputs.num_classes, device=cfg.device
    )  # (N, K)
    return Evidence(signals.given_label_score(votes, y), votes, votes.argmax(1))


@register_signal("prototype")
def prototype_evidence(inputs, cfg, logits) -> Evidence:
    """Margin of the given class's trimmed-mean prototype over the best other one."""
    x, y = inputs.embed, inputs.labels
    protos = signals.robust_prototypes(
        x, y, num_classes=inputs.num_classes, trim=cfg.trim, device=cfg.device
    )  # (K, D)
    margin, nearest = signals.prototype_scores(x, y, protos, device=cfg.device)
    return Evidence(margin, voter=nearest)


@register_signal("zero_shot")
def zero_shot_evidence(inputs, cfg, logits) -> Evidence | None:
    """Agreement of CLIP's zero-shot text classifier, when class text embeddings are given.
    Not a voter: class names are too coarse to name a species on their own."""
    if inputs.text_embed is None:
        return None
    x, y = inputs.embed, inputs.labels
    temperature = cfg.zero_shot_temperature
    if temperature is None:  # calibrate on the given labels (see fit_temperature)
        temperature = signals.fit_temperature(x @ inputs.text_embed.T, y)
    probs = signals.zero_shot_probs(
        x, inputs.text_embed, temperature=temperature, device=cfg.device
    )  # (N, K)
    return Evidence(signals.given_label_score(probs, y), probs)


@register_signal("model", student=True)
def model_evidence(inputs, cfg, logits) -> Evidence:
    """The round's cross-fitted model: no sample is judged by a model that saw its label."""
    probs = signals.model_probs(logits)  # (N, K)
    return Evidence(
        signals.given_label_score(probs, inputs.labels), probs, signals.row_argmax(probs)
    )
