"""Scores of a prediction file against labels: top-1, balanced accuracy, per-class, head/tail.

    report = evaluate(pred, labels, train_counts=None)
    report["top1"], report["balanced_accuracy"], report["per_class"], report["groups"]

Groups: classes sorted by training count (or, without one, by their frequency in the labels)
and cut into thirds: "head" (most frequent third), "medium", "tail". Thirds rather than fixed
thresholds (ImageNet-LT's 100/20) because datasets here range from 70 to 600 images per class.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from heads.classes import GROUPS, class_groups

__all__ = ["GROUPS", "REPORT_KEYS", "class_groups", "evaluate", "format_report", "is_eval_report"]

# The keys of `evaluate`'s report: a JSON object with exactly these is an `engine eval --json`
# file, the only kind `--json` overwrites (engine.outputs' rule: never a user's file).
REPORT_KEYS = frozenset(
    {"samples", "missing", "extra", "top1", "balanced_accuracy", "per_class", "groups"}
)


def evaluate(
    pred: dict[str, str], labels: dict[str, str], train_counts: dict[str, float] | None = None
) -> dict:
    """Compare name -> class id maps; names missing from `pred` count as wrong."""
    names = sorted(labels)
    truth = np.array([labels[n] for n in names])
    guess = np.array([pred.get(n, "") for n in names])
    correct = truth == guess
    classes = sorted(set(truth))
    per_class = {c: float(correct[truth == c].mean()) for c in classes}
    counts = train_counts or {c: float((truth == c).sum()) for c in classes}
    groups = class_groups({c: counts.get(c, 0.0) for c in classes})
    group_scores = {}
    for g in GROUPS:
        members = [c for c in classes if groups[c] == g]
        if members:
            group_scores[g] = {
                "classes": len(members),
                "balanced_accuracy": float(np.mean([per_class[c] for c in members])),
            }
    return {
        "samples": len(names),
        "missing": int(sum(n not in pred for n in names)),
        "extra": int(sum(n not in labels for n in pred)),
        "top1": float(correct.mean()) if len(names) else 0.0,
        "balanced_accuracy": float(np.mean(list(per_class.values()))) if classes else 0.0,
        "per_class": per_class,
        "groups": group_scores,
    }


def format_report(report: dict) -> str:
    lines = [
        f"samples {report['samples']}  missing {report['missing']}  extra {report['extra']}",
        f"top-1             {report['top1']:.4f}",
        f"balanced accuracy {report['balanced_accuracy']:.4f}",
    ]
    for g, s in report["groups"].items():
        lines.append(f"{g:<7} ({s['classes']} classes) {s['balanced_accuracy']:.4f}")
    return "\n".join(lines)


def is_eval_report(path: Path) -> bool:
    """Whether `path` holds a report `evaluate` wrote (`engine eval --json`)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and set(data) == REPORT_KEYS
