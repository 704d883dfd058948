"""The challenge's `name, 0042` files, read strictly: predictions and label files alike.

    predictions = read_id_rows(Path("pred_results.csv"), what="predictions")
    labels = read_id_rows(Path("labels.csv"), what="labels", classes=manifest["classes"])

One reader, so a prediction and a label for the same file always compare as the same strings:
UTF-8 with or without a byte-order mark; blank lines skipped; the name kept exactly as written
before the last comma (spaces are part of file names); the class a number, normalised to the
four digits `engine predict` writes (`1`, `01` and `0001` are all `0001`), or, in a label file
with `classes`, a class folder name mapped to that folder's id. A line that is none of these,
an empty name, or one name given two different classes is refused in one line naming the file
and line number, since scoring it would silently count samples wrong (or lose them).
"""

from __future__ import annotations

from pathlib import Path

from engine.classnames import class_id, read_text
from engine.errors import UserError

MAX_ID = 9999  # ids are four digits


def read_id_rows(path: Path, *, what: str, classes: list[str] | None = None) -> dict[str, str]:
    """name -> four-digit class id of every line of `path`.

    Args:
        path: a `name, 0042` file.
        what: "predictions" or "labels", for the messages.
        classes: class folder names (index = position); lets a label name its class folder.

    Raises:
        UserError: not UTF-8, a malformed line, an empty name, a class that is neither an id
            nor (with `classes`) a class folder, or a name given two different classes.
    """
    path = Path(path)
    text = read_text(path, f"{what} file")  # a BOM is dropped: it is not part of a name
    index = {name: i for i, name in enumerate(classes or [])}
    rows: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        name, sep, value = line.rpartition(",")
        if not sep:
            raise UserError(f"{where}: expected 'name, class', got {line!r}; expected lines "
                            "'name.jpg, 0042'")  # fmt: skip
        if not name.strip():
            raise UserError(f"{where}: empty file name in {line!r}")
        cid = _class_id(value.strip(), index, classes, where)
        if name in rows and rows[name] != cid:
            raise UserError(
                f"{where}: {name!r} is given class {cid} here and {rows[name]} on line "
                f"{first_line[name]}; keep one row per file"
            )
        rows[name] = cid
        first_line.setdefault(name, lineno)
    return rows


def _class_id(value: str, index: dict, classes: list[str] | None, where: str) -> str:
    """The four-digit id of one class cell (see the module docstring)."""
    if value.isascii() and value.isdigit():
        if int(value) > MAX_ID:
            raise UserError(f"{where}: class id {value!r} has more than four digits")
        return f"{int(value):04d}"
    if value in index:
        return class_id(classes, index[value])
    if not value:
        raise UserError(f"{where}: empty class; expected a 4-digit class id like 0042")
    if classes is None:
        raise UserError(
            f"{where}: class {value!r} is not a 4-digit class id like 0042 (a label file may "
            "name class folders with --train-counts MANIFEST)"
        )
    raise UserError(
        f"{where}: class {value!r} is neither a class id nor one of the {len(classes)} class "
        f"folders (e.g. {', '.join(classes[:3])})"
    )
