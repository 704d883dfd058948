"""`report.png` of a run folder: one figure that shows what happened, panel by panel.

    from heads.report import write_report
    write_report(run_dir)                       # -> run_dir/report.png

Panels: class counts (the long tail), screening scores by state, per-round counts, training
curves, head / medium / tail accuracy, and the run's settings. Each panel reads what the run
folder holds (files of `engine train`, `heads.screen` and `engine eval --json`); a panel whose
data is missing says so instead of failing, so a report can be drawn at any point of a run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import runs as run_files
from engine.atomic import write_atomic

log = logging.getLogger(__name__)

REPORT_FILE = run_files.REPORT
# Where screening rounds may live in a run folder (DESIGN.md names `rounds/`).
ROUND_DIRS = (run_files.ROUNDS,)
# The final round's per-sample scores, written beside the rounds by heads.screen.page.
SCORES_FILE = run_files.SCORES
PREFIX = run_files.ROUND_PREFIX
SCORE_NAME = "screening score (mean percentile rank of the signals; low = suspect)"
# Per-sample files an older round folder may hold instead, best first; weights the last resort.
SCORE_FILES = (("combined.npy", SCORE_NAME), ("p_clean.npy", "clean posterior"),
               ("weight.npy", "sample weight (no screening scores saved)"))  # fmt: skip
EVAL_FILES = (run_files.EVAL, "evaluation.json", "eval/report.json")  # older names too
TITLES = {
    "classes": "class counts (sorted)",
    "scores": "screening scores by state",
    "rounds": "per-round counts",
    "curves": "training curves",
    "groups": "head / medium / tail accuracy",
    "summary": "run",
}


@dataclass
class RunData:
    """What a run folder holds, each item None when missing."""

    run_dir: Path
    config: dict = field(default_factory=dict)
    class_counts: np.ndarray | None = None
    scores: tuple[str, np.ndarray, np.ndarray] | None = None  # (name, values (N,), state (N,))
    rounds: list[dict] | None = None
    history: list[dict] | None = None
    evaluation: dict | None = None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("report: cannot read %s: %s", path, err)
        return None


def _rounds_dir(run_dir: Path) -> Path | None:
    for name in ROUND_DIRS:
        folder = run_dir / name
        if (folder / run_files.SUMMARY).exists() or any(folder.glob(f"{PREFIX}*")):
            return folder
    return None


def _last_round(rounds_dir: Path | None) -> Path | None:
    if rounds_dir is None:
        return None
    found = [p for p in rounds_dir.glob(f"{PREFIX}*") if p.name[len(PREFIX) :].isdigit()]
    return max(found, key=lambda p: int(p.name[len(PREFIX) :]), default=None)


def _class_counts(run_dir: Path, config: dict, last_round: Path | None) -> np.ndarray | None:
    """Given-label count per class: from a round's class_counts.json, else the shard manifest."""
    if last_round is not None and (last_round / "class_counts.json").exists():
        data = _read_json(last_round / "class_counts.json")
        if data and data.get("counts"):
            return np.asarray(data["counts"]).sum(axis=1)
    for manifest in (
        run_dir / "manifest.json",
        Path(str(config.get("shards", ""))) / "manifest.json",
    ):
        if manifest.is_file():
            data = _read_json(manifest) or {}
            if data.get("class_counts"):
                return np.asarray(list(data["class_counts"].values()))
    return None


def _scores(rounds_dir: Path | None, last_round: Path | None):
    """(name, (N,) values, (N,) state) of the final round: scores.npz, else a round's files."""
    if rounds_dir is not None and (rounds_dir / SCORES_FILE).is_file():
        with np.load(rounds_dir / SCORES_FILE) as z:
            return SCORE_NAME, z["combined"], z["state"]
    if last_round is None or not (last_round / "state.npy").exists():
        return None
    state = np.load(last_round / "state.npy")
    for file, name in SCORE_FILES:
        if (last_round / file).exists():
            values = np.load(last_round / file)
            if values.shape == state.shape:
                return name, values, state
    return None


def _history(run_dir: Path) -> list[dict] | None:
    """Per-epoch metrics: metrics.jsonl (written during training), else metrics.json."""
    path = run_dir / run_files.METRICS_LINES
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        if rows:
            return rows
    metrics = run_dir / run_files.METRICS
    data = _read_json(metrics) if metrics.exists() else None
    return (data or {}).get("history") or None


def load_run(run_dir, evaluation: Path | None = None) -> RunData:
    """Read everything the report can show from a run folder (`evaluation`: an `engine eval
    --json` file to show instead of the run folder's own eval.json)."""
    run_dir = Path(run_dir)
    config_file = run_dir / run_files.CONFIG
    config = (_read_json(config_file) if config_file.exists() else {}) or {}
    rounds_dir = _rounds_dir(run_dir)
    last = _last_round(rounds_dir)
    summary = (
        _read_json(rounds_dir / run_files.SUMMARY)
        if rounds_dir and (rounds_dir / run_files.SUMMARY).exists()
        else None
    )
    files = [Path(evaluation)] if evaluation else [run_dir / f for f in EVAL_FILES]
    evaluation = next((_read_json(f) for f in files if f.exists()), None)
    return RunData(
        run_dir=run_dir,
        config=config,
        class_counts=_class_counts(run_dir, config, last),
        scores=_scores(rounds_dir, last),
        rounds=(summary or {}).get("rounds") or None,
        history=_history(run_dir),
        evaluation=evaluation,
    )


def _missing(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no data:\n{what}", ha="center", va="center", transform=ax.transAxes,
            fontsize=9, color="gray")  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])


def _panel_classes(ax, data: RunData) -> None:
    if data.class_counts is None or not len(data.class_counts):
        return _missing(ax, "no class counts (rounds/round_*/class_counts.json or manifest)")
    counts = np.sort(np.asarray(data.class_counts))[::-1]
    ax.bar(np.arange(len(counts)), counts, width=1.0)  # linear: bar heights read as counts
    ax.set_xlabel(f"class rank ({len(counts)} classes)")
    ax.set_ylabel("images")
    ax.set_ylim(0, counts[0] * 1.15)  # room for the ratio above the tallest bar
    top, low = int(counts[0]), int(counts[-1])
    ratio = f"{top / low:.3g}" if low else "inf"
    ax.text(0.98, 0.97, f"max/min = {top}/{low} = {ratio}", ha="right", va="top",
            transform=ax.transAxes)  # fmt: skip


def _panel_scores(ax, data: RunData) -> None:
    if data.scores is None:
        return _missing(ax, "no screening round (rounds/round_*/state.npy)")
    from heads.screen.partition import STATES  # deferred: heads.screen imports torch

    name, values, state = data.scores
    bins = np.linspace(float(values.min()), float(values.max()) + 1e-9, 30)
    for s, label in enumerate(STATES):
        members = values[state == s]
        if len(members):
            ax.hist(members, bins=bins, alpha=0.6, label=f"{label} ({len(members)})")
    ax.set_xlabel(name)
    ax.set_ylabel("samples")
    ax.legend(fontsize=7)


def _panel_rounds(ax, data: RunData) -> None:
    if not data.rounds:
        return _missing(ax, "no screening summary (rounds/summary.json)")
    # summary.json's per-state counts, out-of-set included: the stacked parts add up to the
    # samples. Deferred: heads.screen imports torch.
    from heads.screen.partition import STATES

    rounds = [r.get("round", i) for i, r in enumerate(data.rounds)]
    bottom = np.zeros(len(rounds))
    for key in STATES:
        values = np.array([r.get("all", {}).get(key, 0) for r in data.rounds], dtype=float)
        ax.bar(rounds, values, bottom=bottom, label=key.replace("_", "-"))
        bottom += values
    ax.set_xticks(rounds)
    ax.set_xlabel("round")
    ax.set_ylabel("samples")
    ax.legend(fontsize=7)


def _panel_curves(ax, data: RunData) -> None:
    if not data.history:
        return _missing(ax, "no training metrics (metrics.jsonl / metrics.json)")
    steps = np.arange(1, len(data.history) + 1)
    loss = [h.get("loss", np.nan) for h in data.history]
    ax.plot(steps, loss, "o-", label="loss")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    acc = [h.get("train_acc", h.get("accuracy", np.nan)) for h in data.history]
    twin = ax.twinx()
    twin.plot(steps, acc, "s--", color="tab:orange", label="train acc")
    twin.set_ylabel("train accuracy")
    twin.set_ylim(0, 1)
    phases = [h.get("phase") for h in data.history]
    for i in range(1, len(phases)):
        if phases[i] != phases[i - 1]:
            ax.axvline(i + 0.5, color="gray", ls=":")
            ax.text(i + 0.6, max(loss), str(phases[i]), fontsize=7, va="top")
    ax.legend(loc="upper right", fontsize=7)
    twin.legend(loc="lower right", fontsize=7)


def _panel_groups(ax, data: RunData) -> None:
    groups = (data.evaluation or {}).get("groups") or {}
    if not groups:
        return _missing(ax, "no evaluation (eval.json from `engine eval --json`)")
    names = [g for g in ("head", "medium", "tail") if g in groups]
    values = [groups[g]["balanced_accuracy"] for g in names]
    bars = ax.bar(names, values, color=["tab:blue", "tab:green", "tab:red"][: len(names)])
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_ylim(0, 1.1)  # room for the bar labels above 1.0
    ax.set_ylabel("balanced accuracy")
    top1 = data.evaluation.get("top1")
    if top1 is not None:
        ax.axhline(top1, color="gray", ls="--")
        ax.text(0.02, top1, f" top-1 {top1:.3f}", va="bottom", fontsize=8)


def _panel_summary(ax, data: RunData) -> None:
    train = data.config.get("train", {}) if isinstance(data.config, dict) else {}
    lines = [f"run: {data.run_dir.name}"]
    for key in ("unfreeze_last", "loss", "head", "epochs_lp", "epochs_ft", "seed"):
        if key in train:
            lines.append(f"{key}: {train[key]}")
    for key in ("rounds", "weights", "features"):
        if key in data.config:
            lines.append(f"{key}: {data.config[key]}")
    if data.class_counts is not None:
        lines.append(f"samples: {int(np.sum(data.class_counts))}")
    ax.text(0.02, 0.98, "\n".join(lines), va="top", family="monospace", fontsize=8,
            transform=ax.transAxes)  # fmt: skip
    ax.axis("off")


PANELS = {
    "classes": _panel_classes,
    "scores": _panel_scores,
    "rounds": _panel_rounds,
    "curves": _panel_curves,
    "groups": _panel_groups,
    "summary": _panel_summary,
}


def build_figure(data: RunData):
    """The report figure (2 x 3 panels, titles from `TITLES`) for loaded run data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    for ax, (key, draw) in zip(axes.flat, PANELS.items(), strict=True):
        draw(ax, data)
        ax.set_title(TITLES[key])
    fig.suptitle(f"engine run report: {data.run_dir}", fontsize=11)
    fig.tight_layout()
    return fig


def write_report(run_dir, evaluation: Path | None = None) -> Path:
    """Draw `run_dir/report.png` (atomic write) from whatever the run folder holds."""
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    fig = build_figure(load_run(run_dir, evaluation))
    path = run_dir / REPORT_FILE
    try:
        write_atomic(path, lambda f: fig.savefig(f, dpi=90, format="png"))
    finally:
        plt.close(fig)
    log.info("report: %s", path)
    return path


def refresh_report(eval_json: Path) -> Path | None:
    """Re-draw the report of the run folder an `engine eval --json` file was written into,
    so its head / medium / tail panel fills; None when that folder is not a run folder."""
    run_dir = Path(eval_json).parent
    if not (run_dir / run_files.CONFIG).is_file():
        return None
    return write_report(run_dir, evaluation=Path(eval_json))
