"""`--class-names` files: one `folder, name` row per class, the same for every command.

    names = read_class_names(Path("names.csv"))    # {"0042": "common daisy", ...}

CSV read with the csv module: a UTF-8 byte-order mark, quoted fields (`0042, "daisy, ox-eye"`)
and blank or `#` comment lines are fine. A folder missing from the file keeps its folder name.
"""

from __future__ import annotations

import csv
from pathlib import Path

from engine.errors import UserError


def read_class_names(path: Path) -> dict[str, str]:
    """{class folder: display name} from a `folder, name` CSV.

    Raises:
        UserError: unreadable or non-UTF-8 file, a row without two fields, or a folder
            named twice; the message names the file and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(
            f"--class-names {path} is not UTF-8 text (byte {err.start}); save it as UTF-8"
        ) from err
    except OSError as err:
        raise UserError(f"--class-names {path} cannot be read: {err.strerror}") from err
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
