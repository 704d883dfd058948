"""The shard folder's `manifest.json` (schema in docs/architecture.md), written last.

manifest = load_manifest(Path("work/shards/train"))
manifest["num_samples"], manifest["classes"]

Readers go through `shards.format.open_shards`, which calls `load_manifest` once and passes
the checked result around; `read_manifest_file` is the JSON step alone, for the writer's
resume check.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.errors import UserError
from engine.outputs import OutputKind

FORMAT = "engine.shards/1"
MANIFEST_NAME = "manifest.json"
REQUIRED_KEYS = ("format", "labeled", "classes", "shard_size", "shards", "num_samples")
REBUILD = "rebuild it with `engine shard --force`"


def is_engine_shards(folder: Path) -> bool:
    """A shard folder written before marker files: an engine manifest, or finished shards'
    progress records of an interrupted run (`shards.writer.PROGRESS_DIR`)."""
    folder = Path(folder)
    if any((folder / ".progress").glob("shard-*.json")):
        return True
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


# The output-folder rule (engine.outputs): `engine shard --out` writes and `--force` clears
# only a missing or empty folder or one of these.
SHARDS_OUTPUT = OutputKind("shard folder", "shards", recognise=is_engine_shards)


def read_manifest_file(path: Path) -> dict:
    """The JSON object in `path`.

    Raises:
        UserError: the file is unreadable, truncated, not JSON, or holds no JSON object.
    """
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{path} is not valid JSON ({reason}); {REBUILD}") from err
    if not isinstance(manifest, dict):
        raise UserError(
            f"{path} holds a JSON {type(manifest).__name__}, not a manifest object; {REBUILD}"
        )
    return manifest


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
    manifest = read_manifest_file(path)
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if manifest.get("format") != FORMAT or missing:
        raise UserError(
            f"{path} is not an {FORMAT} manifest (format={manifest.get('format')!r}, "
            f"missing {missing}); {REBUILD}"
        )
    _check_shard_list(path, manifest)
    return manifest


def _check_shard_list(path: Path, manifest: dict) -> None:
    """Every shard entry names its tar and count, and the counts add up."""
    shards = manifest["shards"]
    if not isinstance(shards, list) or not all(_entry_ok(s) for s in shards):
        raise UserError(
            f"{path}: 'shards' must be a list of {{name, index, count}} entries; {REBUILD}"
        )
    for entry in shards:
        for key in ("name", "index"):
            value = entry.get(key)
            if (key == "name" or value) and not _plain_file_name(value):
                raise UserError(
                    f"{path}: shard {key} {value!r} is not a file name inside the shard folder "
                    f"(absolute paths and '..' are refused, nothing was read); {REBUILD}"
                )
    counts = [s["count"] for s in shards]
    size, total = manifest["shard_size"], manifest["num_samples"]
    if sum(counts) != total or any(c != size for c in counts[:-1]):
        raise UserError(
            f"{path}: shard counts {counts} do not match num_samples {total!r} / "
            f"shard_size {size!r}; {REBUILD}"
        )


def _entry_ok(entry) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("name"), str)
        and isinstance(entry.get("count"), int)
        and entry["count"] >= 0
    )


def _plain_file_name(value) -> bool:
    """A file name confined to the shard folder: no separator, not `.` or `..`, not absolute."""
    return (
        isinstance(value, str)
        and value not in ("", ".", "..")
        and not any(c in value for c in "/\\\0")
    )
