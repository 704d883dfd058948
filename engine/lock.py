"""One writer per output folder: a lock file beside the folder, naming the PID that holds it.

    with output_lock(Path("work/shards/train"), wait=False):   # refuse if another holds it
        pack(...)
    hold_output_lock(run_dir)                                  # held until the process ends

    @locks_output("out", what="feature store")                 # a function's `out` argument
    def extract(shard_dir, out, cfg): ...

The lock is `flock` on `<parent>/.<name>.lock`. The kernel drops it when its holder exits,
SIGKILL included, so a stale lock file never blocks anyone: there is no PID to guess at.
The file holds the holder's PID so that a refusal can name it. It lives beside the folder,
not inside, so that `--force` may delete and rebuild the folder while holding it.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import inspect
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from engine.errors import UserError

log = logging.getLogger(__name__)

# Lock files this process holds, by path: a second claim of the same folder in the same
# process (train building its own store, say) is re-entrant instead of a self-deadlock, since
# flock locks belong to open files, not to processes.
_HELD: dict[str, int] = {}


def lock_path(folder: Path) -> Path:
    """Where the lock of `folder` lives: `<parent>/.<name>.lock`, of the resolved path, so
    `--out D` and `--out LINK_TO_D` (or `D/../D`) contend for one lock."""
    folder = Path(folder).resolve()
    return folder.parent / f".{folder.name}.lock"


@contextlib.contextmanager
def output_lock(folder: Path, *, wait: bool, what: str = "output folder") -> Iterator[None]:
    """Hold the lock of `folder` for the block.

    Args:
        folder: the output folder (it need not exist yet).
        wait: when another process holds it, wait for it (True) or refuse (False).
        what: what the folder is, for the messages ("shard folder", "run folder").

    Raises:
        UserError: another process holds the lock and `wait` is False.
    """
    key = str(lock_path(folder))
    if key in _HELD:
        yield
        return
    fd = _acquire(Path(key), Path(folder), wait, what)
    _HELD[key] = fd
    try:
        yield
    finally:
        del _HELD[key]
        _release(Path(key), fd)


def hold_output_lock(folder: Path, *, what: str = "run folder") -> None:
    """Take the lock of `folder` (refusing when it is taken) and keep it until the process ends."""
    key = str(lock_path(folder))
    if key not in _HELD:
        _HELD[key] = _acquire(Path(key), Path(folder), False, what)
        atexit.register(_release, Path(key), _HELD[key])


def locks_output(argument: str, *, what: str) -> Callable:
    """Decorate a function so that it runs holding the lock of its folder argument `argument`.

    It waits for another holder, unless its `cfg` argument asks for `force` (which deletes
    what the holder is writing): then it refuses. Under torchrun only rank 0 takes the lock,
    since all ranks write the one output together.
    """

    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args, **kwargs):
            if os.environ.get("RANK", "0") != "0":
                return fn(*args, **kwargs)
            bound = signature.bind(*args, **kwargs).arguments
            force = bool(getattr(bound.get("cfg"), "force", False))
            with output_lock(Path(bound[argument]), wait=not force, what=what):
                return fn(*args, **kwargs)

        return locked

    return decorate


def holder_pid(folder: Path) -> int | None:
    """The PID written in `folder`'s lock file, or None when there is none."""
    try:
        text = lock_path(folder).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _acquire(path: Path, folder: Path, wait: bool, what: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = holder_pid(folder)
            if not wait:
                os.close(fd)
                raise UserError(
                    f"{what} {folder} is being written by another engine process "
                    f"(PID {pid if pid is not None else 'unknown'}); wait for it to finish, "
                    "or stop it, then run again"
                ) from None
            log.info("waiting for PID %s, which is writing %s %s", pid, what, folder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        if _same_file(fd, path):
            break
        os.close(fd)  # the holder removed the file as it let go: lock the new one instead
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    os.fsync(fd)
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _release(path: Path, fd: int) -> None:
    # Unlink while still holding the lock: a waiter then finds its file gone and retries.
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.close(fd)
