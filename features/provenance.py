"""Where a feature store came from, and the one rule that says whether it is stale.

    shards, manifest, note = find_shards(store, given=None)   # recorded folder, or --shards
    check_fresh(store, manifest, shards)                      # UserError (one line) if stale
    differs = stale_keys(store.attrs, wanted)                 # the comparison itself

The extractor records in the store what made it: `model`, `weights`, `views`, `classes`,
`preprocess` (the exact view recipe, `shards.decode.PREPROCESS`) and `source` (the shards'
`folder`, `fingerprint` and `num_samples`). Every stage compares a store with the same rule,
`stale_keys`: `engine features` against what it would write now (then reuses, resumes or
refuses), `engine train`, `engine screen` and `engine predict` against the engine's current
model and view recipe and, when the shards are at hand, their manifest (`check_fresh`). So a
store made before an upgrade that changed the views, or from shards since re-packed, is
refused in one line by every stage instead of being used silently.

The shards' folder is recorded (absolute) so that later stages find them without being told:
thumbnails on the suspects page, the files a test store lacks in `engine predict`. A folder
that has moved is passed again with `--shards` and checked by its fingerprint.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.errors import UserError
from features.store import MODEL, FeatureStore
from shards.decode.preprocess import PREPROCESS
from shards.manifest import load_manifest

# The attributes a store's features depend on (the extractor's record), in message order.
RECIPE_KEYS = ("model", "weights", "views", "classes", "preprocess", "source")
# Keys of `source` that identify the shards' content; the folder may move.
SOURCE_IDENTITY = ("fingerprint", "num_samples")


def source_record(shard_dir: Path, manifest: dict) -> dict:
    """The `source` attribute of a store made from the shards at `shard_dir`."""
    return {
        "folder": str(Path(shard_dir).resolve()),
        "fingerprint": manifest.get("fingerprint"),
        "num_samples": int(manifest["num_samples"]),
    }


def engine_recipe(manifest: dict | None = None) -> dict:
    """What `engine features` would record now: the model and view recipe, and with a shard
    manifest its classes and source identity (weights and views are the caller's choice)."""

    wanted: dict = {"model": MODEL, "preprocess": PREPROCESS}
    if manifest is not None:
        wanted["classes"] = list(manifest.get("classes") or [])
        wanted["source"] = {k: manifest.get(k) for k in SOURCE_IDENTITY}
    return wanted


def _jsonish(value):
    """Compare attributes as they round-trip through JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def stale_keys(attrs: dict, wanted: dict) -> list[str]:
    """The keys of `wanted` whose recorded value in `attrs` differs ([] = fresh).

    `source` compares only its identity (fingerprint, sample count), and only what the store
    recorded (a store written by another tool may not know its shards); every other key is
    compared exactly, a missing one counting as different.
    """
    differs = []
    for key in RECIPE_KEYS:
        if key not in wanted:
            continue
        if key == "source":
            have = attrs.get("source") if isinstance(attrs.get("source"), dict) else {}
            if any(
                have.get(k) is not None and _jsonish(have[k]) != _jsonish(wanted[key].get(k))
                for k in SOURCE_IDENTITY
            ):
                differs.append(key)
        elif _jsonish(attrs.get(key)) != _jsonish(wanted[key]):
            differs.append(key)
    return differs


def read_manifest_if_any(shards) -> dict | None:
    """The shard folder's manifest, or None when there are no shards there."""
    if shards is None or not (Path(shards) / "manifest.json").is_file():
        return None

    return load_manifest(Path(shards))


def find_shards(store: FeatureStore, given=None) -> tuple[Path | None, dict | None, str | None]:
    """(folder, manifest, None) of the shards `store` was made from, or (None, None, why not).

    `given` (an explicit --shards) wins over the folder the store recorded; whether those
    shards are the store's own is `check_fresh`'s question.
    """
    if given is not None:
        manifest = read_manifest_if_any(given)
        if manifest is None:
            return None, None, f"no shards at {given} (no manifest.json)"
        return Path(given), manifest, None
    folder = store.source.get("folder")
    if not folder:
        return None, None, "the store records no shards folder; pass --shards"
    manifest = read_manifest_if_any(folder)
    if manifest is None:
        return None, None, f"the store's shards are no longer at {folder} (moved?); pass --shards"
    return Path(folder), manifest, None


def describe(attrs: dict, wanted: dict, key: str) -> str:
    """What differs for one stale key, as the store recorded it vs now."""
    if key == "source":
        have, want = attrs.get("source") or {}, wanted["source"]
        parts = []
        if have.get("fingerprint") not in (None, want.get("fingerprint")):
            parts.append(f"fingerprint {str(have['fingerprint'])[:12]} vs "
                         f"{str(want.get('fingerprint'))[:12]}")  # fmt: skip
        if have.get("num_samples") not in (None, want.get("num_samples")):
            parts.append(f"{have['num_samples']} vs {want.get('num_samples')} samples")
        return ", ".join(parts)
    if key == "classes":
        have, want = list(attrs.get("classes") or []), wanted["classes"]
        return f"{len(have)} vs {len(want)} classes" if len(have) != len(want) else "class names"
    if key == "preprocess":
        return "its view recipe (preprocess) is not this engine's"
    return f"{key} {attrs.get(key)!r} vs {wanted[key]!r}"


def check_fresh(store: FeatureStore, manifest: dict | None = None, shards=None) -> None:
    """Refuse (one line) a store that is not what `engine features` would make now: another
    model or view recipe, or (given the shards' manifest) other classes or shard contents."""
    wanted = engine_recipe(manifest)
    differs = stale_keys(store.attrs, wanted)
    if not differs:
        return
    detail = "; ".join(describe(store.attrs, wanted, key) for key in differs)
    rebuild = f"rebuild it with `engine features {shards or 'SHARDS'} --out {store.path} --force`"
    if set(differs) <= {"classes", "source"}:
        raise UserError(
            f"feature store {store.path} was not made from the shards in {shards} ({detail}); "
            f"{rebuild}, or pass the --shards it was made from"
        )
    raise UserError(f"feature store {store.path} is stale ({detail}); {rebuild}")
