"""Class ids and `--class-names` files: one rule and one reader for every command.

    names = read_class_names(Path("names.csv"))    # {"0042": "common daisy", ...}
    ids = class_ids(["0001", "cat"])               # UserError: both would be 0001

A class's id (the four digits of `pred_results.csv` and label files) is its folder name when
that is a number (`42/` -> `0042`), else its position in the sorted folder list. Two folders
can therefore claim one id (`0001/` and a second folder `cat/`; `1/` and `01/`): `class_ids`
refuses such a class list, naming both folders, wherever one is read (shard, train, predict).

CSV read with the csv module: a UTF-8 byte-order mark, quoted fields (`0042, "daisy, ox-eye"`)
and blank or `#` comment lines are fine. A folder missing from the file keeps its folder name.
"""

from __future__ import annotations

import csv
from pathlib import Path

from engine.errors import UserError


def class_id(classes: list[str], index: int) -> str:
    """Four-digit id: the class folder name when numeric (`42` -> `0042`), else the index."""
    name = classes[index] if 0 <= index < len(classes) else ""
    number = int(name) if name.isascii() and name.isdigit() else int(index)
    return f"{number:04d}"


def class_ids(classes: list[str], where: object = "the class list") -> list[str]:
    """The id of every class, in class order.

    Raises:
        UserError: two classes get one id; the message names both folders and `where`.
    """
    ids = [class_id(classes, i) for i in range(len(classes))]
    first: dict[str, str] = {}
    for name, cid in zip(classes, ids, strict=True):
        if cid in first:
            raise UserError(
                f"class folders {first[cid]!r} and {name!r} of {where} both get class id {cid} "
                "(a numeric folder's id is its number, any other folder's its position in the "
                "sorted list); rename one so every class has its own id, e.g. number every "
                "folder, then run `engine shard --force`"
            )
        first[cid] = name
    return ids


def check_class_ids(classes: list[str], where: object = "the class list") -> None:
    """Refuse a class list in which two classes get one id (see `class_ids`)."""
    class_ids(classes, where)


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of a small user file (a byte-order mark is dropped).

    Raises:
        UserError: unreadable, or not UTF-8 (UTF-16 is named as such); names `what` and the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"{what} {path} cannot be read: {err.strerror or err}") from err
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise UserError(f"{what} {path} is UTF-16 text; save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{what} {path} is not UTF-8 text (byte {err.start}); save it as UTF-8"
        ) from err


def read_class_names(path: Path) -> dict[str, str]:
    """{class folder: display name} from a `folder, name` CSV.

    Raises:
        UserError: unreadable or non-UTF-8 file, a row without two fields, or a folder
            named twice; the message names the file and line.
    """
    path = Path(path)
    text = read_text(path, "--class-names")
    names: dict[str, str] = {}
    rows = csv.reader(text.splitlines(), skipinitialspace=True)
    for lineno, row in enumerate(rows, 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise UserError(
                f"--class-names {path}:{lineno}: expected 'folder, class name' "
                f"(quote a name holding a comma), got {','.join(row)!r}"
            )
        folder = row[0].strip()
        if folder in names:
            raise UserError(f"--class-names {path}:{lineno}: folder {folder!r} is named twice")
        names[folder] = row[1].strip()
    return names


def names_in_class_order(names: dict[str, str], classes: list[str]) -> tuple[list[str], list[str]]:
    """(display name per class, classes without one); unnamed classes keep their folder name."""
    missing = [c for c in classes if c not in names]
    return [names.get(c, c) for c in classes], missing
