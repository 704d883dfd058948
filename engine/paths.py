"""The default work paths of every command, named once.

    engine shard data/train        # -> shards_for("data/train") = work/shards/train
    engine features                # SHARDS_TRAIN -> store_for(SHARDS_TRAIN) = work/features/train.zarr

Everything a command writes by default lives under `WORK`, relative to the current folder.
`writable_dir` / `writable_file` check an output location before any work is done, so a bad
`--out` fails in one line at once instead of after minutes of inference.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import UserError

WORK = Path("work")
SHARDS_TRAIN = WORK / "shards" / "train"
FEATURES_TRAIN = WORK / "features" / "train.zarr"
RUNS = WORK / "runs"
LATEST_RUN = RUNS / "latest"
SCREEN_OUT = WORK / "screen"
BENCH_OUT = WORK / "bench"
DEMO_OUT = WORK / "demo"
PREDICTIONS = Path("pred_results.csv")


def shards_for(src: Path) -> Path:
    """work/shards/<name of the image folder>."""
    return WORK / "shards" / Path(src).resolve().name


def store_for(shards: Path) -> Path:
    """work/features/<split>.zarr, the split being the shard folder's name."""
    return WORK / "features" / f"{Path(shards).resolve().name}.zarr"


def writable_dir(path: Path, option: str) -> Path:
    """`path` as a folder that exists or can be created, and can be written.

    Creates nothing: the nearest existing ancestor must be a writable folder.

    Raises:
        UserError: naming `option`, the path and why it cannot be written.
    """
    _check_nearest_folder(Path(path), Path(path), option)
    return Path(path)


def writable_file(path: Path, option: str) -> Path:
    """`path` as a file that can be (over)written: a writable folder, not itself a folder."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name such as {PREDICTIONS}")
    _check_nearest_folder(path.parent, path, option)
    return path


def _check_nearest_folder(folder: Path, shown: Path, option: str) -> None:
    """The nearest existing ancestor of `folder` (itself included) is a writable folder."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{option} {shown}: {probe} is a file, not a folder; pick another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{option} {shown}: {probe} is not writable; pick a writable folder")
