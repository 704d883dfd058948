"""SRRS re-screening: rectified labels are checked by a verifier that is not the student.

    part = verify_relabels(part, embed, labels, cfg=cfg)
    part = relabel_by_clean_probe(part, embed, labels, knn_choice, num_classes=K, cfg=cfg)

The verifier is the screening probe trained only on the samples screened CLEAN, cross-fitted
in two halves (a relabeled sample is judged by a probe that never saw it). A relabel stands
only when the verifier's top class is the proposed one; otherwise the sample is dropped.
`relabel_by_clean_probe` uses such a verifier the other way: it proposes new labels for the
flagged samples it and the neighbours agree on.
Notation: N samples, D embedding width, K classes.
"""

from __future__ import annotations

import numpy as np

from heads.screen.config import ScreenConfig
from heads.screen.partition import AMBIGUOUS, CLEAN, DROPPED, RELABELED, Partition
from heads.screen.probe import fold_ids, one_hot, train_probe
from heads.screen.signals import softmax


def _probe_on(rows: np.ndarray, embed, labels, num_classes: int, cfg: ScreenConfig):
    """The screening probe trained on `rows` (clean samples) with their given labels."""
    return train_probe(embed[rows], one_hot(labels[rows], num_classes),
                       np.ones(rows.size, np.float32), cfg=cfg.probe)  # fmt: skip


def verify_relabels(
    part: Partition, embed: np.ndarray, labels: np.ndarray, *, num_classes: int, cfg: ScreenConfig
) -> Partition:
    """A copy of `part` where relabels the verifier does not confirm become DROPPED."""
    moved = np.flatnonzero(part.state == RELABELED)
    if moved.size == 0:
        return part
    state, proposed = part.state.copy(), part.proposed.copy()
    ids = fold_ids(labels, 2, cfg.seed + 7919)  # its own split, not the student's
    clean = part.state == CLEAN
    for fold in range(2):
        train = np.flatnonzero(clean & (ids != fold))
        judged = moved[ids[moved] == fold]
        if judged.size == 0 or train.size == 0:
            continue
        probe = _probe_on(train, embed, labels, num_classes, cfg)
        verdict = probe.predict_logits(embed[judged]).argmax(1)  # (m,)
        rejected = judged[verdict != proposed[judged]]
        state[rejected], proposed[rejected] = DROPPED, -1
    return Partition(state=state, proposed=proposed)


def relabel_by_clean_probe(
    part: Partition,
    embed: np.ndarray,
    labels: np.ndarray,
    knn_choice: np.ndarray,
    *,
    num_classes: int,
    cfg: ScreenConfig,
) -> Partition:
    """A copy of `part` where flagged samples move to the class a clean-only probe names.

    The probe is trained on the CLEAN samples only, so it never saw the samples it judges
    (ambiguous, relabeled, dropped). A sample moves (state RELABELED) when the probe's top
    class is not its given label, has probability >= `cfg.clean_probe_bar`, and is also its
    neighbours' (`knn_choice` (N,)) top class; out-of-set samples stay out.
    """
    judged = np.flatnonzero(np.isin(part.state, (AMBIGUOUS, RELABELED, DROPPED)))
    train = np.flatnonzero(part.state == CLEAN)
    if judged.size == 0 or train.size == 0:
        return part
    probe = _probe_on(train, embed, labels, num_classes, cfg)
    probs = softmax(probe.predict_logits(embed[judged]))  # (m, K)
    best = probs.argmax(1)
    move = (
        (best != labels[judged])
        & (probs.max(1) >= cfg.clean_probe_bar)
        & (best == knn_choice[judged])
    )
    state, proposed = part.state.copy(), part.proposed.copy()
    state[judged[move]], proposed[judged[move]] = RELABELED, best[move]
    return Partition(state=state, proposed=proposed)
