"""The shard folder's `manifest.json` (schema in docs/architecture.md), written last.

manifest = load_manifest(Path("work/shards/train"))
manifest["num_samples"], manifest["classes"]
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.errors import UserError

FORMAT = "engine.shards/1"
MANIFEST_NAME = "manifest.json"
REQUIRED_KEYS = ("format", "labeled", "classes", "shard_size", "shards", "num_samples")


def load_manifest(shard_dir: Path) -> dict:
    """Read and check the manifest of a shard folder.

    Raises:
        UserError: the folder has no manifest (not packed, or packing unfinished), or the
            manifest is not an engine shard manifest.
    """
    if not Path(shard_dir).is_dir():
        raise UserError(
            f"not a folder of engine shards: {shard_dir}; pack the images first with "
            f"`engine shard SRC --out {shard_dir}`"
        )
    path = Path(shard_dir) / MANIFEST_NAME
    if not path.is_file():
        raise UserError(
            f"no {MANIFEST_NAME} in {shard_dir}: not an engine shard folder, or packing did "
            "not finish; run `engine shard SRC --out DIR` (it resumes an interrupted run)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(
            f"{path} is not valid JSON ({err}); rebuild with `engine shard --force`"
        ) from err
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if manifest.get("format") != FORMAT or missing:
        raise UserError(
            f"{path} is not an {FORMAT} manifest (format={manifest.get('format')!r}, "
            f"missing {missing}); rebuild with `engine shard --force`"
        )
    counts = [s["count"] for s in manifest["shards"]]
    if sum(counts) != manifest["num_samples"] or any(
        c != manifest["shard_size"] for c in counts[:-1]
    ):
        raise UserError(f"{path}: shard counts {counts} do not match num_samples/shard_size")
    return manifest
