"""Save every screening round and summarise it for head / medium / tail classes.

Files in `out_dir/round_<r>/`: `state.npy` (N,) int8 index into STATES, `weight.npy` (N,)
float32, `proposed.npy` (N,) int64 (-1 = dropped), `target.npz` (sparse soft targets: `rows`,
`cols`, `vals` of the non-zero entries, shape (N, K)), `class_counts.json`; and
`out_dir/summary.json` with one entry per round: the samples per state (keyed by the state
names of `heads.screen.partition.STATES`, the one vocabulary of the five states; they add up to
`samples`), overall and per class group; and, with the relabeling stage, `mixture` (samples it
names another class than their folder, seconds). The stage's result is in `out_dir/mixture/`:
the round files (its targets and weights) and `mixture_class.npy` (N,) int64,
`mixture_prob.npy` (N,) float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine import runs as run_files
from engine.atomic import write_atomic
from engine.jsonfile import write_json
from heads.classes import class_members
from heads.screen.partition import STATES


def summarise(state: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """Samples per state (a partition of the samples), overall and per class group (head /
    medium / tail: thirds of the classes by given-label count, `heads.classes.class_members`)."""
    counts = np.bincount(labels, minlength=num_classes)
    groups = {"all": np.arange(num_classes), **class_members(counts)}
    out = {}
    for name, classes in groups.items():
        member = np.isin(labels, classes)
        per_state = np.bincount(state[member], minlength=len(STATES))
        out[name] = {"samples": int(member.sum()),
                     **{key: int(n) for key, n in zip(STATES, per_state, strict=True)}}  # fmt: skip
    return out


def save_round(out_dir: Path, r: int, *, state, weights, targets, proposed, labels) -> None:
    """Write one round's per-sample arrays and per-class state counts."""
    _save_arrays(Path(out_dir) / run_files.round_dir(r), state=state, weights=weights,
                 targets=targets, proposed=proposed, labels=labels)  # fmt: skip


def save_mixture(out_dir: Path, result, labels) -> None:
    """The relabeling stage's result: the round files and its proposed class and probability."""
    folder = Path(out_dir) / run_files.MIXTURE_DIR
    _save_arrays(folder, state=result.state, weights=result.weights, targets=result.targets,
                 proposed=result.proposed, labels=labels)  # fmt: skip
    for name, array in zip(run_files.MIXTURE_FILES[-2:], (result.mixture_class, result.mixture_prob),
                           strict=True):  # fmt: skip
        write_atomic(folder / name, lambda f, array=array: np.save(f, array))


def _save_arrays(folder: Path, *, state, weights, targets, proposed, labels) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state_file, weight_file, proposed_file, target_file, counts_file = run_files.ROUND_FILES
    for name, array in ((state_file, state), (weight_file, weights), (proposed_file, proposed)):
        write_atomic(folder / name, lambda f, array=array: np.save(f, array))
    rows, cols = np.nonzero(targets)
    sparse = {"rows": rows, "cols": cols, "vals": targets[rows, cols], "shape": targets.shape}
    write_atomic(folder / target_file, lambda f: np.savez_compressed(f, **sparse))
    num_classes = targets.shape[1]
    per_class = np.zeros((num_classes, len(STATES)), np.int64)
    np.add.at(per_class, (labels, state), 1)
    write_json(
        folder / counts_file,
        {"states": list(STATES), "counts": per_class.tolist()},
    )


def load_targets(path: Path) -> np.ndarray:
    """Dense (N, K) soft targets back from a round's `target.npz`."""
    z = np.load(path)
    out = np.zeros(tuple(z["shape"]), np.float32)
    out[z["rows"], z["cols"]] = z["vals"]
    return out


def write_summary(out_dir: Path, rounds: list[dict], mixture: dict | None = None) -> None:
    extra = {} if mixture is None else {"mixture": mixture}
    write_json(Path(out_dir) / run_files.SUMMARY, {"rounds": rounds, **extra})
