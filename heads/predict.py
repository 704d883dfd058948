"""Prediction files in the challenge format, and their zip.

    rows = [("0001.jpg", class_id(classes, 42))]
    write_predictions(rows, Path("pred_results.csv"))   # also writes pred_results.zip

Format (DESIGN.md): one row per test image, no header, the file name exactly as in the test
folder, a comma and a space, the class id as four digits: `xxxx.jpg, 0042`.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np


def class_id(classes: list[str], index: int) -> str:
    """Four-digit id: the class folder name when numeric (`42` -> `0042`), else the index."""
    name = classes[index] if 0 <= index < len(classes) else ""
    number = int(name) if name.isascii() and name.isdigit() else int(index)
    return f"{number:04d}"


def prediction_rows(names: Iterable[str], logits: np.ndarray, classes: list[str]):
    """(name, class id) per sample, argmax of the logits (n, K)."""
    best = np.asarray(logits).argmax(axis=1)
    return [(name, class_id(classes, int(i))) for name, i in zip(names, best, strict=True)]


def format_rows(rows: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{name}, {cid}\n" for name, cid in rows)


def write_predictions(rows: Iterable[tuple[str, str]], out: Path) -> tuple[Path, Path]:
    """Write the CSV (UTF-8, '\\n' line ends) and a zip holding it, both atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = format_rows(rows)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    os.replace(tmp, out)
    zip_path = out.with_suffix(".zip")
    tmp_zip = zip_path.with_name(zip_path.name + ".tmp")
    with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        # fixed timestamp: the same predictions give the same zip bytes
        info = zipfile.ZipInfo(out.name, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, text.encode("utf-8"))
    os.replace(tmp_zip, zip_path)
    return out, zip_path


def read_predictions(path: Path) -> dict[str, str]:
    """name -> class id from a file in the challenge format (also reads label files)."""
    result: dict[str, str] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        name, sep, cid = line.rpartition(",")
        if not sep:
            raise ValueError(f"{path}:{lineno}: expected 'name, class', got {line!r}")
        result[name] = cid.strip()  # the name is kept exactly: spaces are part of file names
    return result
