"""Scratch folders that do not outlive their run: removed on every exit Python can catch, and
swept by the next run when their owner was killed.

    with scratch_dir("predict") as tmp:     # <tempdir>/engine-predict-<pid>-<random>/
        pack(folder, tmp / "shards", cfg)

An exception, Ctrl-C (KeyboardInterrupt) or SIGTERM (turned into SystemExit while the folder
exists, in the main thread) removes the folder on the way out. SIGKILL cannot be caught: the
folder stays, but its name holds the owner's PID, so the next `scratch_dir` of the same kind
removes every such folder whose owner is no longer running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "engine-"


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and not ours to sweep
        return True
    return True


def sweep_stale(kind: str, root: Path | None = None) -> list[Path]:
    """Remove `<root>/engine-<kind>-<pid>-*` folders whose process is gone; returns them."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    for folder in root.glob(f"{PREFIX}{kind}-*-*"):
        pid_text = folder.name[len(PREFIX) + len(kind) + 1 :].split("-", 1)[0]
        if not pid_text.isdigit() or not folder.is_dir() or folder.is_symlink():
            continue
        if int(pid_text) != os.getpid() and not _owner_alive(int(pid_text)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        log.info("removed %d scratch folder(s) left by killed runs: %s", len(removed),
                 ", ".join(str(p) for p in removed))  # fmt: skip
    return removed


def _raise_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through the `finally` that removes the folder


@contextlib.contextmanager
def _sigterm_unwinds():
    """SIGTERM raises SystemExit here (main thread only: signal handlers live there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def scratch_dir(kind: str, root: Path | None = None):
    """A fresh folder `<root>/engine-<kind>-<pid>-<random>` (root: the system temp folder),
    removed when the block exits however Python can see it exit."""
    sweep_stale(kind, root)
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-{os.getpid()}-", dir=root))
    try:
        with _sigterm_unwinds():
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
