"""JSON files written atomically: manifests, run configs, metrics, reports.

    write_json(path, {"classes": [...]})    # temp file + fsync + rename
    obj = read_json(path)

A reader (or a crash) never sees half a file: the data is on disk before the rename makes it
visible. Non-ASCII text (class folders, paths) is written as is; keys are sorted so that the
same object always gives the same bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(path: Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
    except BaseException:  # an object json cannot write, or Ctrl-C: no stray temp file
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))
