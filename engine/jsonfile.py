"""JSON files written atomically: manifests, run configs, metrics, reports.

    write_json(path, {"classes": [...]})    # engine.atomic: temp file, fsync, rename
    obj = read_json(path)

A reader (or a crash) never sees half a file: the data is on disk before the rename makes it
visible. Non-ASCII text (class folders, paths) is written as is; keys are sorted so that the
same object always gives the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.atomic import write_atomic


def write_json(path: Path, obj) -> None:
    """Write `obj` as indented, key-sorted UTF-8 JSON through `engine.atomic.write_atomic`."""
    # Serialised first: an object json cannot write fails before any file is touched.
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    write_atomic(path, text)


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))
