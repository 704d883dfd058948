"""List the files under an image folder in a stable order, with their labels.

A folder of class folders (`SRC/<class>/<file>`, nested folders allowed) is labeled; a
flat folder (`SRC/<file>`) is unlabeled. Hidden folders (".ipynb_checkpoints") and
hidden files that are not images (".DS_Store", macOS "._photo.jpg" metadata) are not
images or classes: they are listed as skipped, never dropped silently. A hidden file with
an image suffix (".photo.jpg") is an image like any other: a test folder may hold one. Order = relative POSIX paths sorted by code point, the same everywhere.

    listing = list_sources(Path("data/train"), labeled=None)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import UserError

# Suffixes that make a hidden file an image (Pillow reads them all; repair converts them).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)


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


def list_sources(src: Path, labeled: bool | None = None) -> SourceListing:
    """Find the files of `src`; `labeled=None` detects class folders vs a flat folder.

    Raises:
        UserError: `src` is missing, not a folder, holds no files, or mixes loose files
            and class folders without `labeled` saying which layout is meant.
    """
    src = Path(src)
    if not src.exists():
        raise UserError(f"source folder not found: {src}; pass a folder of images")
    if not src.is_dir():
        raise UserError(f"source is not a folder: {src}; pass a folder of images")
    entries = sorted(os.scandir(src), key=lambda e: e.name)
    folders = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    loose = [e.name for e in entries if not e.is_dir() and not e.name.startswith(".")]
    if labeled is None:
        if folders and loose:
            raise UserError(
                f"{src} holds both files ({loose[0]}, ...) and folders ({folders[0]}, ...); "
                "pass --labeled (folders are classes) or --unlabeled (all files, no labels)"
            )
        labeled = bool(folders)
    listing = SourceListing(src, labeled, folders if labeled else [], [])
    class_index = {name: i for i, name in enumerate(listing.classes)}
    for relpath, stat in _walk(src):
        parts = relpath.split("/")
        if _hidden_non_image(parts):
            listing.skipped.append({"path": relpath, "reason": "hidden file or folder"})
        elif labeled and len(parts) == 1:
            listing.skipped.append({"path": relpath, "reason": "not inside a class folder"})
        else:
            label = class_index[parts[0]] if labeled else -1
            listing.files.append(Source(relpath, label, stat.st_size, stat.st_mtime_ns))
    if not listing.files:
        raise UserError(f"no files found in {src}; expected {src}/<class>/<image> or {src}/<image>")
    return listing


def _hidden_non_image(parts: list[str]) -> bool:
    """True for a file inside a hidden folder, or a hidden file that is not an image."""
    *folders, name = parts
    if any(p.startswith(".") for p in folders):
        return True
    if not name.startswith("."):
        return False
    # "._x.jpg" is AppleDouble metadata that macOS leaves beside x.jpg, never an image.
    return name.startswith("._") or os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES


def _walk(root: Path):
    """(relative POSIX path, stat) of every file under root, sorted by path."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(root, followlinks=True):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        for name in filenames:
            full = os.path.join(dirpath, name)
            relpath = name if rel_dir == "." else f"{rel_dir}/{name}"
            found.append((relpath, os.stat(full)))
    return sorted(found, key=lambda item: item[0])


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
