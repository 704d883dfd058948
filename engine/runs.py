"""Run folders: `work/runs/<name>/` with config.json, metrics, model.pt and a `latest` pointer.

    run = make_run_dir(Path("work/runs"), name=None)        # work/runs/20250101-120000
    write_json(run / "config.json", config)                 # engine.jsonfile: atomic
    append_jsonl(run / "metrics.jsonl", {"epoch": 0, ...})
    point_latest(run)                                        # work/runs/latest -> <name>

Every write is atomic (temp file + rename), so a crash never leaves half a file behind.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

LATEST = "latest"


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line and flush it to disk (a line is either whole or absent)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def make_run_dir(runs_root: Path, name: str | None = None) -> Path:
    """`runs_root/name` (a timestamp when no name), created if missing."""
    name = name or time.strftime("%Y%m%d-%H%M%S")
    run = Path(runs_root) / name
    run.mkdir(parents=True, exist_ok=True)
    return run


def point_latest(run: Path) -> Path:
    """Make `<runs root>/latest` point at `run`: a relative symlink, else a text file."""
    run = Path(run)
    link = run.parent / LATEST
    tmp = run.parent / f".{LATEST}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        tmp.symlink_to(run.name, target_is_directory=True)
    except OSError:  # file systems without symlinks: a pointer file
        tmp.write_text(run.name + "\n", encoding="utf-8")
    os.replace(tmp, link)
    return link


def resolve_run(path: Path) -> Path:
    """A run folder from a path that may be the `latest` pointer (symlink or file)."""
    path = Path(path)
    if path.is_file() and path.name == LATEST:
        return path.parent / path.read_text(encoding="utf-8").strip()
    return path.resolve() if path.is_symlink() else path
