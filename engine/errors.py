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
    re-raise an `OSError` from the path as their own error type.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UserError):
            return exc
        found = _from_os_error(exc) if isinstance(exc, OSError) else None
        if found is not None:
            return found
        exc = exc.__cause__ or exc.__context__
    return None


def _from_os_error(exc: OSError) -> UserError | None:
    advice = _ADVICE.get(exc.errno)
    if advice is None or not exc.filename:
        return None  # no path to name: not something a user option caused
    target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else str(exc.filename)
    reason = exc.strerror or os.strerror(exc.errno)
    return UserError(f"{target}: {reason}; {advice}")
