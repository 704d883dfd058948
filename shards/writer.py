"""`engine shard`: pack an image folder into WebDataset shards with DALI indexes.

Store order is the sorted list of source files minus the rejected ones; every shard but
the last holds exactly `shard_size` samples. Each finished shard is written as
`.shard-%06d.tar.tmp`, indexed, renamed, and then recorded in `.progress/shard-%06d.json`
(which source files it consumed, what was repaired or rejected): a rerun skips the
recorded shards and continues with the next source file. `manifest.json` comes last.

    manifest = pack(Path("data/train"), Path("work/shards/train"), ShardConfig())
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import webdataset as wds
from tqdm import tqdm

from engine.errors import UserError
from engine.faults import fault_point
from engine.jsonfile import write_json
from engine.lock import output_lock
from engine.outputs import claim_output_dir
from shards.config import ShardConfig
from shards.index import write_dali_index
from shards.keys import make_key
from shards.manifest import FORMAT, MANIFEST_NAME, SHARDS_OUTPUT, read_manifest_file
from shards.repair import Prepared, prepare_image
from shards.sources import Source, SourceListing, fingerprint, list_sources

log = logging.getLogger(__name__)

PROGRESS_DIR = ".progress"
SHARD_PATTERN = "shard-{:06d}"
# Fixed tar header fields: the same inputs give the same bytes on every machine and run.
TAR_MTIME = 0
TAR_OWNER = "engine"
# Files each worker takes per task: large enough to amortise IPC, small enough that the
# progress bar moves and the ordered result queue stays short.
CHUNKSIZE = 8


def pack(src: Path, out: Path, cfg: ShardConfig) -> dict:
    """Pack `src` into shards under `out`; resume an interrupted run; return the manifest.

    Raises:
        UserError: bad source folder, output from other inputs/parameters without `force`,
            or no readable image at all.
    """
    src, out = Path(src), Path(out)
    listing = list_sources(src, cfg.labeled)
    keys = _unique_keys(listing.files)
    fprint = fingerprint(listing, cfg.params())
    # --force deletes what another run is writing: refuse. Otherwise wait, then reuse or
    # resume what it wrote rather than redo it.
    with output_lock(out, wait=not cfg.force, what="shard folder"):
        return _pack_locked(listing, keys, fprint, out, cfg)


def _pack_locked(listing: SourceListing, keys: list[str], fprint: str, out: Path, cfg) -> dict:
    src = listing.root
    claim_output_dir(out, SHARDS_OUTPUT)  # a folder of the user's files is refused, never cleared
    if cfg.force:
        clear_outputs(out)
    finished = _finished_manifest(out, fprint)
    if finished is not None:
        log.info("%s is already packed from %s; pass --force to rebuild", out, src)
        return finished
    states = load_progress(out, fprint)
    start = sum(s["consumed"] for s in states)
    if states:
        log.info("resuming after %d finished shards (%d files done)", len(states), start)
    tail = _pack_remaining(listing, keys, out, cfg, fprint, states, start)
    manifest = build_manifest(listing, keys, cfg, fprint, states, tail)
    if not manifest["shards"]:
        raise UserError(
            f"no readable image in {src}: all {len(listing.files)} files were rejected "
            f"(first: {manifest['rejected'][0]['path']}: {manifest['rejected'][0]['reason']})"
        )
    write_json(out / MANIFEST_NAME, manifest)
    return manifest


def _unique_keys(files: list[Source]) -> list[str]:
    keys = [make_key(f.relpath) for f in files]
    if len(set(keys)) != len(keys):
        dup = next(k for k, n in Counter(keys).items() if n > 1)
        raise RuntimeError(f"key collision on {dup!r}: extend shards.keys.HASH_CHARS")
    return keys


def clear_outputs(out: Path) -> None:
    """Delete what `pack` writes (shards, indexes, progress, manifest) and nothing else."""
    for pattern in ("shard-*.tar", "shard-*.idx", ".shard-*.tmp", MANIFEST_NAME):
        for path in out.glob(pattern):
            path.unlink()
    progress = out / PROGRESS_DIR
    if progress.is_dir():
        for path in progress.glob("*.json*"):
            path.unlink()


def _finished_manifest(out: Path, fprint: str) -> dict | None:
    path = out / MANIFEST_NAME
    if not path.is_file():
        return None
    manifest = read_manifest_file(path)  # a truncated or non-object manifest: one-line error
    if manifest.get("fingerprint") != fprint:
        raise UserError(
            f"{out} already holds shards packed from other files or parameters; "
            "pass --force to rebuild, or choose another --out"
        )
    return manifest


def load_progress(out: Path, fprint: str) -> list[dict]:
    """States of the shards finished by an earlier run with the same inputs, in order.

    Stops at the first shard whose state or files are missing: it is rebuilt.
    """
    states = []
    for s in range(len(list((out / PROGRESS_DIR).glob("shard-*.json")))):
        path = out / PROGRESS_DIR / f"{SHARD_PATTERN.format(s)}.json"
        if not path.is_file():
            break
        state = json.loads(path.read_text(encoding="utf-8"))
        if state["fingerprint"] != fprint:
            raise UserError(
                f"{out} holds partial shards packed from other files or parameters; "
                "pass --force to rebuild, or choose another --out"
            )
        tar = out / state["name"]
        if not tar.is_file() or tar.stat().st_size != state["tar_size"]:
            break
        states.append(state)
    return states


def _pack_remaining(
    listing: SourceListing,
    keys: list[str],
    out: Path,
    cfg: ShardConfig,
    fprint: str,
    states: list[dict],
    start: int,
) -> dict:
    """Prepare and write the files from `start` on; returns the unfinished tail's state."""
    todo = listing.files[start:]
    builder = ShardBuilder(out, len(states), start, fprint)
    totals = Counter({k: sum(len(s[k]) for s in states) for k in ("repaired", "rejected")})
    # Always shown (on stderr), as the feature pass does: packing takes minutes on large folders.
    bar = tqdm(total=len(listing.files), initial=start, unit="img", desc="shard")
    try:
        for i, prepared in enumerate(_prepare_all(listing.root, todo, cfg), start=start):
            source = listing.files[i]
            builder.add(source, keys[i], listing.class_names[i], prepared)
            totals["repaired"] += prepared.repaired
            totals["rejected"] += not prepared.accepted
            bar.update()
            fault_point("shard-file")
            bar.set_postfix(totals, refresh=False)
            if builder.count == cfg.shard_size:
                states.append(finish_shard(builder))
                builder = ShardBuilder(out, len(states), i + 1, fprint)
    finally:
        bar.close()
        builder.close()
    if builder.count:
        states.append(finish_shard(builder))
        return builder.empty_state()
    return builder.state()


def _prepare_all(root: Path, todo: list[Source], cfg: ShardConfig) -> Iterator[Prepared]:
    """`prepare_image` over the files, in order, on `cfg.num_workers` processes."""
    prepare = partial(prepare_image, short_side=cfg.short_side, quality=cfg.quality)
    paths = [root / f.relpath for f in todo]
    if cfg.num_workers == 1 or len(paths) < 2 * CHUNKSIZE:
        yield from map(prepare, paths)
        return
    # spawn: the parent may hold torch/DALI threads, which fork would copy in a bad state.
    with _worker_pool(cfg.num_workers) as pool:
        yield from pool.imap(prepare, paths, chunksize=CHUNKSIZE)


def _worker_pool(workers: int):
    """A spawn pool whose workers ignore SIGINT: Ctrl-C reaches the whole process group, and
    only the parent should react (it stops the pool and exits with one line), not every
    worker with its own traceback. SIG_IGN is inherited through exec, so the workers ignore
    it from their first instruction on, before any import."""
    context = multiprocessing.get_context("spawn")
    if threading.current_thread() is not threading.main_thread():
        return context.Pool(workers, initializer=_ignore_sigint)
    # Ignored in the parent too while the pool starts its workers (a fraction of a second).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return context.Pool(workers, initializer=_ignore_sigint)
    finally:
        signal.signal(signal.SIGINT, previous)


# A partial of a builtin, not a function of this module: a spawned worker unpickles its
# initializer by import, and importing this module (webdataset, torch) costs ~1.7 s per
# worker, 6x the whole pack of 200 images.
_ignore_sigint = partial(signal.signal, signal.SIGINT, signal.SIG_IGN)


class ShardBuilder:
    """Collects one shard's samples in a temporary tar and its per-file records."""

    def __init__(self, out: Path, shard_id: int, first: int, fprint: str):
        self.out, self.shard_id, self.first, self.fprint = out, shard_id, first, fprint
        self.name = SHARD_PATTERN.format(shard_id)
        self.tmp_tar = out / f".{self.name}.tar.tmp"
        self.count, self.consumed = 0, 0
        self.records = {"repaired": [], "converted": [], "rejected": []}
        self.class_counts: Counter = Counter()
        self.resized = 0
        self._writer = None

    def add(self, source: Source, key: str, class_name: str | None, prepared: Prepared) -> None:
        """Store an accepted file as a sample; note a rejected one."""
        self.consumed += 1
        if not prepared.accepted:
            entry = {"path": source.relpath, "reason": prepared.reason}
            self.records["rejected"].append(entry)
            return
        entry = {"path": source.relpath, "key": key, "reason": prepared.reason}
        if prepared.repaired:
            self.records["repaired"].append(entry)
        elif prepared.converted:
            self.records["converted"].append(entry)
        self.resized += prepared.resized
        if class_name is not None:
            self.class_counts[class_name] += 1
        self._tar_writer().write(_sample(source, key, class_name, prepared))
        self.count += 1

    def _tar_writer(self) -> wds.TarWriter:
        if self._writer is None:
            self._writer = wds.TarWriter(
                str(self.tmp_tar), user=TAR_OWNER, group=TAR_OWNER, encoder=False, mtime=TAR_MTIME
            )
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def state(self) -> dict:
        """What the progress file records for this shard."""
        return {
            "fingerprint": self.fprint,
            "name": f"{self.name}.tar",
            "index": f"{self.name}.idx",
            "first": self.first,
            "consumed": self.consumed,
            "count": self.count,
            "class_counts": dict(self.class_counts),
            "resized": self.resized,
            **self.records,
        }

    def empty_state(self) -> dict:
        """State of a tail that holds nothing (all its files went into finished shards)."""
        return {
            **self.state(),
            "consumed": 0,
            "count": 0,
            "class_counts": {},
            "resized": 0,
            "repaired": [],
            "converted": [],
            "rejected": [],
        }


def finish_shard(builder: ShardBuilder) -> dict:
    """Close, index and rename the builder's tar, then record it as done (in that order)."""
    builder.close()
    out, name = builder.out, builder.name
    tmp_idx = out / f".{name}.idx.tmp"
    write_dali_index(builder.tmp_tar, tmp_idx)
    os.replace(tmp_idx, out / f"{name}.idx")
    os.replace(builder.tmp_tar, out / f"{name}.tar")
    state = {**builder.state(), "tar_size": (out / f"{name}.tar").stat().st_size}
    write_json(out / PROGRESS_DIR / f"{name}.json", state)  # creates PROGRESS_DIR
    return state


def _sample(source: Source, key: str, class_name: str | None, prepared: Prepared) -> dict:
    meta = {
        "path": source.relpath,
        "label": class_name,
        "repaired": prepared.repaired,
        "converted": prepared.converted,
        "resized": prepared.resized,
        "source_format": prepared.source_format,
        "width": prepared.size[0],
        "height": prepared.size[1],
    }
    sample = {"__key__": key, "jpg": prepared.jpeg, "json": json.dumps(meta).encode("utf-8")}
    if source.label >= 0:
        sample["cls"] = str(source.label).encode("ascii")
    return sample


def build_manifest(
    listing: SourceListing,
    keys: list[str],
    cfg: ShardConfig,
    fprint: str,
    states: list[dict],
    tail: dict,
) -> dict:
    """The manifest of docs/architecture.md from the shards' states and the unshardable tail."""
    class_counts = Counter({name: 0 for name in listing.classes})
    for s in states:
        class_counts.update(s["class_counts"])
    parts = [*states, tail]
    return {
        "format": FORMAT,
        "split": listing.root.resolve().name,
        "source": str(listing.root.resolve()),
        "labeled": listing.labeled,
        "classes": listing.classes,
        "class_counts": {name: class_counts[name] for name in listing.classes},
        "shard_size": cfg.shard_size,
        "shards": [{"name": s["name"], "index": s["index"], "count": s["count"]} for s in states],
        "num_samples": sum(s["count"] for s in states),
        "num_files": len(listing.files) + len(listing.skipped),
        "resized": sum(s["resized"] for s in parts),
        "repaired": [e for s in parts for e in s["repaired"]],
        "converted": [e for s in parts for e in s["converted"]],
        "rejected": [e for s in parts for e in s["rejected"]],
        "skipped": listing.skipped,
        "params": {**cfg.params(), "labeled": listing.labeled},
        "fingerprint": fprint,
    }
