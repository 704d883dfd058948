"""The one atomic write: temp file in the same folder, fsync, rename, fsync the folder.

    write_atomic(run / "model.pt", lambda f: torch.save(payload, f))   # a writer callback
    write_atomic(out / "pred_results.csv", text.encode("utf-8"))        # or the bytes
    with atomic_path(chunk_file, suffix=".partial") as tmp:              # a caller that opens
        fd = os.open(tmp, flags)  ...                                     # the file itself

A reader, a crash or a power cut sees the old file or the whole new one, never a renamed empty
or half-written file: the data is on disk (fsync) before the rename, and the rename is on disk
(fsync of the folder) before the call returns. On any exception (a full disk, Ctrl-C, a writer
that raises) the temp file is removed and the old file is left as it was.

Temp names are `.<name>.<pid>-<random>.tmp` (hidden, unique per writer), so two processes or
threads writing the same path never share a temp file.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

# Folders whose file system cannot fsync a directory (some network and FUSE mounts answer
# EINVAL): the rename is still atomic there, only its durability is the file system's.
_NO_DIR_FSYNC = (errno.EINVAL, errno.ENOTSUP, errno.EBADF)


def temp_name(path: Path, suffix: str = ".tmp") -> Path:
    """A fresh hidden temp path beside `path`."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path, *, suffix: str = ".tmp", durable: bool = True) -> Iterator[Path]:
    """Yield a temp path beside `path`; the caller writes it; then fsync, rename, fsync folder.

    The caller may write the temp file any way it likes (an fd with O_DIRECT, a library that
    wants a file name). Nothing is renamed when the body raises; the temp file is removed.
    `durable=False` skips both fsyncs, for a writer that flushes many files at once later
    (`fsync_tree`): still atomic against crashes, durable only once that flush ran.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path, suffix)
    try:
        yield tmp
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder` (the flush `durable=False` writers owe)."""
    for parent, _, files in os.walk(folder):
        for name in files:
            _fsync_file(Path(parent) / name)
        fsync_dir(Path(parent))


def write_atomic(path: Path, data: bytes | str | Callable[[BinaryIO], object]) -> Path:
    """Write `data` (bytes, UTF-8 text, or a callback given the open binary file) to `path`."""
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        if callable(data):
            data(f)
        else:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def _remove_quietly(tmp: Path) -> None:
    """Remove a temp file on the way out of an error, without hiding that error."""
    with suppress(OSError):
        tmp.unlink(missing_ok=True)
