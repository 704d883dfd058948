"""The run folder: every file `engine train` writes, named once, and how folders are made.

    run = new_run_dir(Path("work/runs"))          # work/runs/20250101-120000 (-2, -3, ... if taken)
    write_json(run / CONFIG, config)              # engine.jsonfile: atomic
    append_jsonl(run / METRICS_LINES, {"epoch": 0, ...})
    mark_finished(run)                            # last: a finished run is never overwritten
    point_latest(run)                             # work/runs/latest -> <name>

Layout of a run folder (tests/test_run_folder.py compares it with a real run's listing):

    .engine-output.json   the output-folder marker (engine.outputs): {"kind": "run"}
    config.json           to_dict(RunConfig): `engine train --config RUN/config.json` re-makes it
    metrics.jsonl         one line per epoch of the final fit (rewritten whole when it ends)
    metrics.json          the final fit's history and the store it read
    model.pt              the merged model (heads.export)
    report.png            heads.report
    finished.json         written last: {"model_sha256": ...}; the run is finished
    failed.json           the error of a run that stopped (removed when it resumes)
    checkpoint/last.pt    the resume point while training (removed once model.pt is written)
    eval.json             `engine eval --json RUN/eval.json` (redraws report.png)
    rounds/               screening: round_<r>/ (ROUND_FILES), summary.json, scores.npz,
                          suspects.csv, suspects.html

A run folder is claimed through engine.outputs: `--out` must be missing, empty or an
unfinished run of the engine; a finished one is refused, so nothing stale (old rounds, a
doubled metrics.jsonl) can mix into a new run. Without `--out`, `new_run_dir` makes a fresh
folder with an exclusive mkdir, so two runs started in the same second never share one.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from pathlib import Path

from engine.atomic import write_atomic
from engine.errors import UserError
from engine.jsonfile import write_json
from engine.outputs import MARKER, OutputKind, claim_output_dir

LATEST = "latest"
CONFIG = "config.json"
METRICS_LINES = "metrics.jsonl"
METRICS = "metrics.json"
MODEL = "model.pt"
REPORT = "report.png"
FINISHED = "finished.json"
FAILED = "failed.json"
CHECKPOINT = "checkpoint"
CHECKPOINT_FILE = "last.pt"
EVAL = "eval.json"
ROUNDS = "rounds"
# The screening folder (a run's rounds/, or `engine screen --out`).
SUMMARY = "summary.json"
SCORES = "scores.npz"
SUSPECTS_CSV = "suspects.csv"
SUSPECTS_PAGE = "suspects.html"
ROUND_PREFIX = "round_"
ROUND_FILES = ("state.npy", "weight.npy", "proposed.npy", "target.npz", "class_counts.json")
# The relabeling stage after the last round (heads/screen/relabel.py): the round files of its
# result, and its proposed true class and that class's probability.
MIXTURE_DIR = "mixture"
MIXTURE_FILES = (*ROUND_FILES, "mixture_class.npy", "mixture_prob.npy")

# Every top-level name a run folder may hold, and every name of its screening folder.
RUN_FILES = (MARKER, CONFIG, METRICS_LINES, METRICS, MODEL, REPORT, FINISHED, FAILED,
             CHECKPOINT, EVAL, ROUNDS)  # fmt: skip
SCREEN_FILES = (MARKER, SUMMARY, SCORES, SUSPECTS_CSV, SUSPECTS_PAGE, MIXTURE_DIR)


def round_dir(r: int) -> str:
    """Name of round r's folder inside a screening folder."""
    return f"{ROUND_PREFIX}{r}"


def _is_older_run(folder: Path) -> bool:
    """A run folder written before marker files: config.json beside a model or metrics."""
    return (folder / CONFIG).is_file() and any(
        (folder / name).exists() for name in (MODEL, METRICS_LINES, CHECKPOINT)
    )


def _is_older_screening(folder: Path) -> bool:
    return (folder / SUMMARY).is_file() or any(folder.glob(f"{ROUND_PREFIX}*"))


RUN_OUTPUT = OutputKind("run folder", "run", recognise=_is_older_run)
SCREEN_OUTPUT = OutputKind("screening folder", "screening", recognise=_is_older_screening)


def new_run_dir(runs_root: Path) -> Path:
    """A new, marked run folder `runs_root/<timestamp>`, `-2`, `-3`, ... when that is taken.

    The exclusive mkdir makes the name unique even between processes started in the same
    second (a seed sweep in parallel).
    """
    runs_root = Path(runs_root)
    runs_root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in itertools.count(1):
        run = runs_root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            run.mkdir()
        except FileExistsError:
            continue
        claim_output_dir(run, RUN_OUTPUT)  # empty: marks it
        return run
    raise AssertionError("unreachable")


def claim_run_dir(run: Path, *, create: bool = True) -> bool:
    """`--out RUN` as this run's folder; returns whether it holds an unfinished run to resume.

    Raises:
        UserError: the folder is finished, holds files of the user's, or another output.
    """
    run = Path(run)
    held = claim_output_dir(run, RUN_OUTPUT, create=create)
    if held and is_finished(run):
        raise UserError(
            f"--out {run} holds a finished run (model.pt, {FINISHED}); it is left as it is: "
            "choose another --out (or none, for a new folder under --runs)"
        )
    return held


def is_finished(run: Path) -> bool:
    """Whether `run` is a finished run (its marker file, or an older run with a model)."""
    run = Path(run)
    if (run / FINISHED).is_file():
        return True
    return not (run / MARKER).exists() and (run / MODEL).is_file()


def mark_finished(run: Path) -> Path:
    """Write `finished.json` (the model's sha256, for checking a copy) as the run's last file."""
    run = Path(run)
    digest = hashlib.sha256()
    with open(run / MODEL, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    write_json(run / FINISHED, {"model": MODEL, "model_sha256": digest.hexdigest()})
    return run / FINISHED


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line and flush it to disk (a line is either whole or absent)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: Path, records: list[dict]) -> None:
    """Rewrite a JSON-lines file whole, atomically (the authoritative history at a run's end)."""
    write_atomic(path, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records))


def point_latest(run: Path) -> Path | None:
    """Make `<runs root>/latest` point at `run`: a relative symlink, else a text file.

    A `latest` that is not the engine's pointer (a user's folder or file of that name) is
    left as it is: returns None.
    """
    run = Path(run)
    link = run.parent / LATEST
    if not _is_pointer(link):
        return None
    tmp = run.parent / f".{LATEST}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        tmp.symlink_to(run.name, target_is_directory=True)
    except OSError:  # file systems without symlinks: a pointer file
        tmp.write_text(run.name + "\n", encoding="utf-8")
    os.replace(tmp, link)
    return link


def _is_pointer(link: Path) -> bool:
    """`latest` is missing, a symlink, or a pointer file naming a folder beside it."""
    if link.is_symlink() or not link.exists():
        return True
    if not link.is_file() or link.stat().st_size > 4096:
        return False
    name = link.read_text(encoding="utf-8", errors="replace").strip()
    return bool(name) and "/" not in name and (link.parent / name).is_dir()


def resolve_run(path: Path) -> Path:
    """A run folder from a path that may be the `latest` pointer (symlink or file)."""
    path = Path(path)
    if path.is_file() and path.name == LATEST:
        return path.parent / path.read_text(encoding="utf-8").strip()
    return path.resolve() if path.is_symlink() else path
