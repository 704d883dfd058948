"""The output-folder rule: the engine removes or overwrites only what carries its own marker.

    STORE = OutputKind("feature store", "features", recognise=is_engine_store, marker_file=False)
    had_output = claim_output_dir(Path(out), STORE)   # missing/empty: ours now; else refused
    remove_owned(Path(out), STORE)                    # refused unless marked as a store
    fresh_output_dir(Path(out), DEMO)                 # claim, and empty it when it held a demo

An output folder a user names (`--out`, `--runs`) may be written only when it is missing,
empty, or already carries the engine's marker for that kind of output: a `.engine-output.json`
(`{"kind": "run"}`) written when the folder is claimed, or the kind's own marker recognised
by `OutputKind.recognise` (a feature store's zarr.json with the engine's `format`, a shard
folder's manifest.json; outputs of older versions carry only those). Anything else (a folder
of the user's files, an output of another kind, the current folder) is refused in one line
before any work, with or without `--force`: `--force` rebuilds the engine's own outputs and
nothing else. Every rmtree of a user-given path in the project goes through `remove_owned`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError
from engine.jsonfile import write_json

MARKER = ".engine-output.json"
# Names a refusal lists, so the user sees which of their files were at stake.
SHOWN_ENTRIES = 3


@dataclass(frozen=True)
class OutputKind:
    """One kind of output folder.

    Attributes:
        name: what it is called in messages ("feature store").
        tag: what its marker file records ("features").
        recognise: the kind's own marker, for folders written before marker files (or kinds
            whose format already marks them); None: the marker file only.
        marker_file: whether claiming writes `MARKER` into the folder (False for a Zarr store,
            whose zarr.json with the engine's format is its marker).
    """

    name: str
    tag: str
    recognise: Callable[[Path], bool] | None = None
    marker_file: bool = True

    def owns(self, folder: Path) -> bool:
        """Whether `folder` carries this kind's marker."""
        if marker_tag(folder) == self.tag:
            return True
        return self.recognise is not None and folder.is_dir() and self.recognise(folder)


def marker_tag(folder: Path) -> str | None:
    """The kind recorded in `folder`'s marker file, or None (no marker, or not ours)."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data.get("kind") if isinstance(data, dict) else None


def claim_output_dir(path: Path, kind: OutputKind, *, option: str = "--out",
                     create: bool = True) -> bool:  # fmt: skip
    """Make `path` this kind's output folder; returns whether it already held one.

    A missing or empty folder is created (`create`) and marked; a folder with this kind's
    marker is kept as it is. `create=False` only checks (nothing is written).

    Raises:
        UserError: `path` is a file, another kind's output, or a folder (the current one
            included) holding anything the engine did not write.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file, not a folder; choose a folder path")
    if path.is_dir():
        if kind.owns(path):
            return True
        if any(path.iterdir()):
            raise UserError(_not_ours(path, kind, option))
    if create:
        path.mkdir(parents=True, exist_ok=True)
        if kind.marker_file:
            _write_marker(path, kind)
    return False


def remove_owned(path: Path, kind: OutputKind, *, option: str = "--out") -> None:
    """Delete `path` when it is this kind's output (or an empty folder); refuse otherwise."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink():
        raise UserError(
            f"{option} {path} is a symbolic link; the engine deletes nothing through a link: "
            f"give the folder it points to ({path.resolve()})"
        )
    if not path.is_dir():
        raise UserError(f"{option} {path} is not a folder the engine wrote; it is left as it is")
    if not kind.owns(path) and any(path.iterdir()):
        raise UserError(_not_ours(path, kind, option))
    if _holds_current_folder(path):
        raise UserError(
            f"{option} {path} holds the current folder, which the engine never deletes; "
            "run from another folder or choose another path"
        )
    shutil.rmtree(path)


def fresh_output_dir(path: Path, kind: OutputKind, *, option: str = "--out") -> Path:
    """`path` claimed for this kind and empty (but for its marker): an earlier output of the
    same kind there is removed first, anything else refused (see `claim_output_dir`)."""
    if claim_output_dir(path, kind, option=option):
        remove_owned(path, kind, option=option)
        claim_output_dir(path, kind, option=option)
    return Path(path)


def _write_marker(folder: Path, kind: OutputKind) -> None:
    write_json(folder / MARKER, {"kind": kind.tag})


def _holds_current_folder(path: Path) -> bool:
    here, target = Path.cwd().resolve(), path.resolve()
    return here == target or target in here.parents


def _not_ours(path: Path, kind: OutputKind, option: str) -> str:
    """The one line refusing a folder that is not this kind's output."""
    other = marker_tag(path)
    if other is not None and other != kind.tag:
        return (
            f"{option} {path} holds another engine output ({other}), not a {kind.name}; "
            "choose another folder"
        )
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    shown = ", ".join(names[:SHOWN_ENTRIES]) + (", ..." if len(names) > SHOWN_ENTRIES else "")
    where = f"{path} (the current folder)" if _holds_current_folder(path) else str(path)
    return (
        f"{option} {where} holds files the engine did not write ({shown}) and is not a "
        f"{kind.name}; the engine never deletes or overwrites them, --force included: choose "
        "a new or empty folder"
    )


def claim_output_file(path: Path, what: str, recognise: Callable[[Path], bool], *,
                      option: str = "--out") -> Path:  # fmt: skip
    """`path` as a file this output may overwrite: missing, empty, or recognised as `what`.

    Raises:
        UserError: a folder, or an existing file that is not `what` (a user's document).
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name")
    if path.exists() and path.stat().st_size and not recognise(path):
        raise UserError(
            f"{option} {path} exists and is not {what}; the engine does not overwrite it: "
            "choose another file name"
        )
    return path
