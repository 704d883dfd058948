"""Which samples a person should look at, and `suspects.csv` for spreadsheets and pandas.

    picks = select_suspects(result, labels, count=200)
    picks.order            # (n,) sample indices, most suspicious first
    picks.trusted          # (K, 3) most trusted clean samples of each class (-1 = none)
    write_suspects_csv(out_dir / "suspects.csv", suspect_rows(result, labels, paths, names))

Notation: N samples, K classes. "Most suspicious" is the lowest combined screening score
(the mean percentile rank of the signals, what the partition ranks by). A suspect's proposed
class is its relabel target when screening relabeled it, else the class other than its given
one that the screening signals' consensus favours most: the alternative a person checks.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import runs as run_files
from engine.atomic import write_atomic
from heads.screen.partition import CLEAN, RELABELED, STATES
from heads.screen.signals import best_other_class

# Columns of suspects.csv before the per-signal scores (one column per signal after them).
# mixture_class / mixture_prob: the folder-mixture stage's proposed true class and its
# probability (empty without that stage).
CSV_HEAD = ("path", "given", "proposed", "state", "weight", "trust", "p_clean", "mixture_class",
            "mixture_prob")  # fmt: skip


@dataclass
class SuspectPicks:
    """order (n,) suspects, most suspicious first; proposed (N,) class a person compares the
    given one with; trusted (K, T) most trusted clean samples per class, -1 padded."""

    order: np.ndarray
    proposed: np.ndarray
    trusted: np.ndarray


def proposed_classes(result, labels: np.ndarray) -> np.ndarray:
    """(N,) relabel target where relabeled, else the consensus' best other class."""
    other, _, _ = best_other_class(result.consensus, labels)
    return np.where(result.state == RELABELED, result.proposed, other).astype(np.int64)


def most_trusted(
    state: np.ndarray, combined: np.ndarray, labels: np.ndarray, num_classes: int, per_class=3
) -> np.ndarray:
    """(K, per_class) indices of each class's clean samples with the highest combined score,
    best first; -1 where a class has fewer clean samples."""
    clean = np.flatnonzero(state == CLEAN)
    order = clean[np.lexsort((-combined[clean], labels[clean]))]  # by class, best first
    out = np.full((num_classes, per_class), -1, np.int64)
    counts = np.bincount(labels[order], minlength=num_classes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for c in np.flatnonzero(counts):
        take = order[starts[c] : starts[c] + min(per_class, counts[c])]
        out[c, : len(take)] = take
    return out


def select_suspects(result, labels: np.ndarray, *, count: int = 200, per_class: int = 3):
    """The `count` least trusted samples with the classes and examples a page shows."""
    labels = np.asarray(labels, np.int64)
    num_classes = result.consensus.shape[1]
    order = np.argsort(result.combined, kind="stable")[:count]
    return SuspectPicks(
        order=order,
        proposed=proposed_classes(result, labels),
        trusted=most_trusted(result.state, result.combined, labels, num_classes, per_class),
    )


def flagged_classes(state: np.ndarray, labels: np.ndarray, num_classes: int, top: int = 10):
    """[(class, flagged, total)] of the `top` classes with the largest non-clean share."""
    total = np.bincount(labels, minlength=num_classes)
    flagged = np.bincount(labels[state != CLEAN], minlength=num_classes)
    share = flagged / np.maximum(total, 1)
    order = np.lexsort((-flagged, -share))  # largest share first, then most flagged
    return [(int(c), int(flagged[c]), int(total[c])) for c in order[:top] if flagged[c]]


def suspect_rows(result, labels, paths, names, proposed=None) -> list[dict]:
    """One dict per non-clean sample (CSV_HEAD + signal columns), most suspicious first."""
    labels = np.asarray(labels, np.int64)
    proposed = proposed_classes(result, labels) if proposed is None else proposed
    order = np.argsort(result.combined, kind="stable")
    mixture = getattr(result, "mixture_class", None)
    rows = []
    for i in order[result.state[order] != CLEAN]:
        row = {
            "path": paths[i],
            "given": names[labels[i]],
            "proposed": names[proposed[i]] if proposed[i] >= 0 else "",
            "state": STATES[result.state[i]],
            "weight": f"{result.weights[i]:.4f}",
            "trust": f"{result.combined[i]:.4f}",
            "p_clean": f"{result.p_clean[i]:.4f}",
            "mixture_class": "" if mixture is None else names[mixture[i]],
            "mixture_prob": "" if mixture is None else f"{result.mixture_prob[i]:.4f}",
        }
        row.update({name: f"{values[i]:.4f}" for name, values in result.scores.items()})
        rows.append(row)
    return rows


def write_suspects_csv(path: Path, rows: list[dict], signal_names) -> Path:
    """UTF-8 CSV with a header (CSV_HEAD then one column per signal), written atomically."""
    path = Path(path)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=[*CSV_HEAD, *signal_names], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, text.getvalue())


def read_suspects_csv(path: Path) -> list[dict]:
    """The rows of a suspects.csv back, as dicts of strings."""
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def mislabeled_share(csv_path: Path, wrong_paths, top: int = 20) -> tuple[int, int]:
    """(hits, n): how many of the first `top` rows of a suspects.csv are in `wrong_paths`
    (paths known to be mislabeled, e.g. from a generated data set's truth file)."""
    rows = read_suspects_csv(csv_path)[:top]
    wrong = set(wrong_paths)
    return sum(row["path"] in wrong for row in rows), len(rows)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write UTF-8 text atomically (`engine.atomic`): a reader never sees half a page."""
    return write_atomic(path, text)


SCORES_FILE = run_files.SCORES


def write_scores(out_dir: Path, result) -> Path:
    """`scores.npz` of the final round: state (N,) int8, combined and p_clean (N,) float32 and
    one (N,) array per signal (`signal_<name>`), for report.png and outside tools."""
    path = Path(out_dir) / SCORES_FILE
    arrays = {
        "state": np.asarray(result.state, np.int8),
        "combined": np.asarray(result.combined, np.float32),
        "p_clean": np.asarray(result.p_clean, np.float32),
        **{f"signal_{k}": np.asarray(v, np.float32) for k, v in result.scores.items()},
    }
    # Written to the open file: np.savez would add .npz to a temp name without it.
    return write_atomic(path, lambda f: np.savez_compressed(f, **arrays))
