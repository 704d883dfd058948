"""Save every screening round and summarise it for head / medium / tail classes.

Files in `out_dir/round_<r>/`: `state.npy` (N,) int8 index into STATES, `weight.npy` (N,)
float32, `proposed.npy` (N,) int64 (-1 = dropped), `target.npz` (sparse soft targets: `rows`,
`cols`, `vals` of the non-zero entries, shape (N, K)), `class_counts.json`; and
`out_dir/summary.json` with one entry per round.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.jsonfile import write_json
from heads.screen.partition import STATES


def class_groups(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Head / medium / tail: thirds of the classes ranked by given-label count."""
    order = np.argsort(-counts, kind="stable")
    thirds = np.array_split(order, 3)
    return {"head": thirds[0], "medium": thirds[1], "tail": thirds[2]}


def summarise(state: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """Counts of kept, relabeled, down-weighted and dropped, overall and per class group."""
    counts = np.bincount(labels, minlength=num_classes)
    groups = {"all": np.arange(num_classes), **class_groups(counts)}
    out = {}
    for name, classes in groups.items():
        member = np.isin(labels, classes)
        per_state = np.bincount(state[member], minlength=len(STATES))
        out[name] = {
            "samples": int(member.sum()),
            "kept": int(per_state[0]),
            "down_weighted": int(per_state[1]),
            "relabeled": int(per_state[2]),
            "dropped": int(per_state[3] + per_state[4]),
            "out_of_set": int(per_state[4]),
        }
    return out


def save_round(out_dir: Path, r: int, *, state, weights, targets, proposed, labels) -> None:
    """Write one round's per-sample arrays and per-class state counts."""
    folder = Path(out_dir) / f"round_{r}"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "state.npy", state)
    np.save(folder / "weight.npy", weights)
    np.save(folder / "proposed.npy", proposed)
    rows, cols = np.nonzero(targets)
    np.savez_compressed(
        folder / "target.npz", rows=rows, cols=cols, vals=targets[rows, cols], shape=targets.shape
    )
    num_classes = targets.shape[1]
    per_class = np.zeros((num_classes, len(STATES)), np.int64)
    np.add.at(per_class, (labels, state), 1)
    write_json(
        folder / "class_counts.json",
        {"states": list(STATES), "counts": per_class.tolist()},
    )


def load_targets(path: Path) -> np.ndarray:
    """Dense (N, K) soft targets back from a round's `target.npz`."""
    z = np.load(path)
    out = np.zeros(tuple(z["shape"]), np.float32)
    out[z["rows"], z["cols"]] = z["vals"]
    return out


def write_summary(out_dir: Path, rounds: list[dict]) -> None:
    write_json(Path(out_dir) / "summary.json", {"rounds": rounds})
