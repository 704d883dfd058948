"""Errors a user can cause and fix.

Library code (shards/, features/, heads/) raises `UserError` with a message that names the
bad value and says what to do; the CLI turns it into one clear line and exit code 1 instead
of a traceback. Programming errors stay ordinary exceptions so they keep their traceback.

The operating system's refusals on a path the user chose (a read-only or full disk, a path
below a regular file, no permission) are user errors too, whatever library raised them:
`user_error_from(exc)` turns them into one `UserError` line in one place (the CLI's entry),
so no command has to wrap its own writes.

    try:
        run()
    except Exception as exc:
        err = user_error_from(exc)
        if err is None:
            raise
"""

from __future__ import annotations

import errno
import os


class UserError(Exception):
    """Bad input, missing files, wrong options: anything the user can fix."""


# errno -> what the user can do about it. Only errors that a path or a disk the user chose
# can cause: the others (EBADF, EINVAL, ENOENT of our own temp files, ...) are bugs and keep
# their traceback.
_ADVICE = {
    errno.EACCES: "fix its permissions or choose another path",
    errno.EPERM: "fix its permissions or choose another path",
    errno.EROFS: "choose a path on a writable disk",
    errno.ENOSPC: "free some space or choose a path on another disk",
    errno.EDQUOT: "free some space or choose a path on another disk",
    errno.ENOTDIR: "a part of the path is a regular file, not a folder; choose another path",
    errno.EEXIST: "a regular file is in the way of a folder; move it or choose another path",
    errno.EISDIR: "it is a folder where a file is needed; give a file path",
    errno.ENAMETOOLONG: "choose a shorter path",
}


def user_error_from(exc: BaseException) -> UserError | None:
    """The one-line `UserError` for `exc`, or None when it is not the user's to fix.

    Looks through the exception's causes and contexts too: zarr, PIL and webdataset often
    re-raise an `OSError` from the path as their own error type. An OS error that names its
    file wins over one that does not (a full disk often surfaces as three chained errors, only
    some with a path); a full or read-only disk is the user's to fix even without a path.
    """
    seen: set[int] = set()
    pathless = None
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UserError):
            return exc
        if isinstance(exc, OSError) and exc.errno in _ADVICE:
            if exc.filename:
                return _with_path(exc)
            if pathless is None and exc.errno in _DISK_WIDE:
                pathless = _without_path(exc)
        exc = exc.__cause__ or exc.__context__
    return pathless


# Errors about a whole disk rather than one path: the user's to fix even when the library
# that hit them dropped the file name.
_DISK_WIDE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _with_path(exc: OSError) -> UserError:
    target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else str(exc.filename)
    reason = exc.strerror or os.strerror(exc.errno)
    return UserError(f"{target}: {reason}; {_ADVICE[exc.errno]}")


def _without_path(exc: OSError) -> UserError:
    reason = exc.strerror or os.strerror(exc.errno)
    return UserError(
        f"{reason} (errno {exc.errno}) while writing the output; {_ADVICE[exc.errno]}, then "
        "run the command again"
    )
