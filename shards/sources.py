"""List the files under an image folder in a stable order, with their labels: the one walker.

A folder of class folders (`SRC/<class>/<file>`, nested folders allowed) is labeled; a
flat folder (`SRC/<file>`) is unlabeled. Links are resolved, and only what is a regular file
after resolving is listed: everything else is named with its reason in `skipped`, never
dropped silently and never read:

| entry | reason in `skipped` |
|---|---|
| hidden folder (".ipynb_checkpoints/"), hidden non-image (".DS_Store", "._x.jpg") | hidden ... |
| a file beside the class folders of a labeled folder | not inside a class folder |
| a link to nothing, a link loop, a folder link back to a parent | broken link / link loop |
| a FIFO, socket or device (a link to /dev/zero included) | not a regular file |
| a name that is not UTF-8 (labeled folders; an unlabeled one is refused) | file name is not UTF-8 |

A hidden file with an image suffix (".photo.jpg") is an image like any other: a test folder
may hold one. A listed file larger than `MAX_FILE_BYTES` is rejected when it is read
(`read_regular_file`), with the cap in the reason, so a test file still gets its row. In an
unlabeled (test) folder every file becomes a prediction row, so a name the CSV cannot hold (a
line break, bytes that are not UTF-8) is refused in one line before any work. Order = relative
POSIX paths sorted by code point, the same everywhere.

    listing = list_sources(Path("data/train"), labeled=None)
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from engine.classnames import check_class_ids
from engine.errors import UserError

# Suffixes that make a hidden file an image (Pillow reads them all; repair converts them).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)
# Largest file read into memory: 64x a 6 MP camera JPEG and far above any web image, yet a
# worker per core holding one stays well inside a machine's memory.
MAX_FILE_BYTES = 256 << 20
HIDDEN = "hidden file or folder"
LOOSE = "not inside a class folder"
NOT_UTF8 = "file name is not UTF-8; rename it to include the file"


@dataclass(frozen=True)
class Source:
    """One file to pack: its path relative to the source folder and its class index."""

    relpath: str
    label: int = -1  # -1 for unlabeled splits
    size: int = 0
    mtime_ns: int = 0


@dataclass
class SourceListing:
    """Everything found under a source folder."""

    root: Path
    labeled: bool
    classes: list[str]
    files: list[Source]
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}

    @property
    def class_names(self) -> list[str | None]:
        return [self.classes[f.label] if f.label >= 0 else None for f in self.files]


@dataclass
class _Walk:
    """What `_walk` found: regular files with their stat, and everything it skipped."""

    files: list[tuple[str, os.stat_result]] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    top_folders: list[str] = field(default_factory=list)  # walked into (empty ones included)


def list_sources(src: Path, labeled: bool | None = None) -> SourceListing:
    """Find the files of `src`; `labeled=None` detects class folders vs a flat folder.

    Raises:
        UserError: `src` is missing, not a folder, holds no files, mixes loose files and
            class folders without `labeled` saying which layout is meant, has two class
            folders with one id, or (unlabeled) holds a name a prediction row cannot hold.
    """
    src = Path(src)
    if not src.exists():
        raise UserError(f"source folder not found: {src}; pass a folder of images")
    if not src.is_dir():
        raise UserError(f"source is not a folder: {src}; pass a folder of images")
    walk = _walk(src)
    folders = [name for name in walk.top_folders if _visible_utf8(name)]
    loose = [p for p, _ in walk.files if "/" not in p and not p.startswith(".")]
    if labeled is None:
        if folders and loose:
            raise UserError(
                f"{src} holds both files ({loose[0]}, ...) and folders ({folders[0]}, ...); "
                "pass --labeled (folders are classes) or --unlabeled (all files, no labels)"
            )
        labeled = bool(folders)
    listing = SourceListing(src, labeled, folders if labeled else [], [], walk.skipped)
    check_class_ids(listing.classes, src)
    class_index = {name: i for i, name in enumerate(listing.classes)}
    for relpath, st in walk.files:
        reason = _skip_reason(relpath, labeled, src)
        if reason:
            listing.skipped.append({"path": shown_path(relpath), "reason": reason})
            continue
        label = class_index[relpath.split("/")[0]] if labeled else -1
        listing.files.append(Source(relpath, label, st.st_size, st.st_mtime_ns))
    listing.skipped.sort(key=lambda s: s["path"])
    if not listing.files:
        raise UserError(f"no files found in {src}; expected {src}/<class>/<image> or {src}/<image>")
    return listing


def _visible_utf8(name: str) -> bool:
    return not name.startswith(".") and _is_utf8(name)


def _is_utf8(name: str) -> bool:
    """False for a name the OS handed over with undecodable bytes (surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _skip_reason(relpath: str, labeled: bool, src: Path) -> str:
    """Why a regular file is not packed ("" = it is), or a refusal for a test folder."""
    parts = relpath.split("/")
    if _hidden_non_image(parts):
        return HIDDEN
    if labeled and len(parts) == 1:
        return LOOSE
    if labeled:
        return "" if _is_utf8(relpath) else NOT_UTF8
    # Unlabeled: every file is a prediction row `name, 0042` of a UTF-8, one-row-per-line CSV.
    if not _is_utf8(relpath) or "\n" in relpath or "\r" in relpath:
        shown = ascii(os.fsencode(relpath))[1:]  # b'a\nb.jpg' -> 'a\nb.jpg'
        raise UserError(
            f"file name {shown} in {src} holds a line break or bytes that are not UTF-8, "
            "which a prediction row cannot hold; rename the file"
        )
    return ""


def shown_path(relpath: str) -> str:
    """`relpath` as UTF-8 text: undecodable bytes of a name written as `\\xff` escapes."""
    if _is_utf8(relpath):
        return relpath
    return os.fsencode(relpath).decode("ascii", "backslashreplace")


def _hidden_non_image(parts: list[str]) -> bool:
    """True for a file inside a hidden folder, or a hidden file that is not an image."""
    *folders, name = parts
    if any(p.startswith(".") for p in folders):
        return True
    if not name.startswith("."):
        return False
    # "._x.jpg" is AppleDouble metadata that macOS leaves beside x.jpg, never an image.
    return name.startswith("._") or os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES


def _walk(root: Path) -> _Walk:
    """Regular files under `root` (links resolved) sorted by relative POSIX path, and every
    entry that is not one, named with its reason."""
    found = _Walk()
    root_stat = os.stat(root)
    _walk_folder(str(root), "", {(root_stat.st_dev, root_stat.st_ino)}, found)
    found.files.sort(key=lambda item: item[0])
    return found


def _walk_folder(folder: str, rel: str, parents: set, found: _Walk) -> None:
    """Depth-first over one folder; `parents` = (device, inode) of the folders above, so a
    folder link back to one of them is named instead of followed forever."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        found.skipped.append(
            {"path": rel or ".", "reason": f"folder cannot be read: {err.strerror}"}
        )
        return
    for entry in entries:
        relpath = f"{rel}/{entry.name}" if rel else entry.name
        try:
            st = os.stat(entry.path)  # follows links
        except OSError as err:
            found.skipped.append({"path": shown_path(relpath), "reason": _stat_failure(err)})
            continue
        if stat.S_ISDIR(st.st_mode):
            ident = (st.st_dev, st.st_ino)
            if ident in parents:
                found.skipped.append(
                    {
                        "path": shown_path(relpath),
                        "reason": "link loop: a link to a folder above it",
                    }
                )
            else:
                if not rel:
                    found.top_folders.append(entry.name)
                _walk_folder(entry.path, relpath, parents | {ident}, found)
        elif stat.S_ISREG(st.st_mode):
            found.files.append((relpath, st))
        else:
            found.skipped.append(
                {"path": shown_path(relpath), "reason": f"not a regular file ({_kind(st)})"}
            )


def _stat_failure(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "link loop: following the link leads back to it"
    if err.errno == errno.ENOENT:
        return "broken link: its target does not exist"
    return f"cannot be read: {err.strerror or err}"


def _kind(st: os.stat_result) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):  # fmt: skip
        if test(st.st_mode):
            return name
    return "special file"


def read_regular_file(path: Path, max_bytes: int | None = None) -> bytes:
    """The bytes of `path`, only if it is a regular file (links resolved) of at most
    `max_bytes`; opened without blocking, so a FIFO swapped in after listing cannot hang.

    Raises:
        OSError: unreadable, not a regular file, or larger than the cap (the message says which).
    """
    max_bytes = MAX_FILE_BYTES if max_bytes is None else max_bytes
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"not a regular file ({_kind(st)})")
        if st.st_size > max_bytes:
            raise OSError(errno.EFBIG, _too_large(st.st_size, max_bytes))
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew after the check
        raise OSError(errno.EFBIG, _too_large(len(data), max_bytes))
    return data


def _too_large(size: int, max_bytes: int) -> str:
    return (
        f"file of {size} bytes is over the {max_bytes >> 20} MiB size cap "
        "(shards.sources.MAX_FILE_BYTES)"
    )


def fingerprint(listing: SourceListing, params: dict) -> str:
    """Hash of everything that decides the output: parameters, layout, files, sizes, mtimes.

    A resumed run continues only when this matches the interrupted run's fingerprint.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps({"params": params, "labeled": listing.labeled}).encode())
    digest.update(json.dumps(listing.classes).encode())
    for f in listing.files:
        digest.update(f"{f.relpath}\0{f.label}\0{f.size}\0{f.mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
