"""A run's inputs, checked before anything is written: the feature store and its weights.

    store, shards, note = ensure_store(features, None, depth=2, weights="openai")  # or built
    weights = backbone_weights(store.attrs, "openai", need=True)           # name, file or None

A store remembers the shards it was made from (`source`: folder, fingerprint and sample
count); `ensure_store` finds them (`--shards` when given, else that folder), builds a missing
store or resumes an unfinished one from them, and applies the one staleness rule
(`features.provenance.check_fresh`), so a stale store (other view recipe, re-packed shards)
or a foreign one (another folder) is refused instead of trained on silently.
"""

from __future__ import annotations

import logging
from pathlib import Path

from engine import paths
from engine.errors import UserError
from features import model as clip_model
from features.config import FeatureConfig
from features.extract import extract
from features.provenance import (
    check_fresh,
    engine_recipe,
    find_shards,
    read_manifest_if_any,
    stale_keys,
)
from features.store import open_store

log = logging.getLogger(__name__)

RANDOM = "random"
OPENAI = "openai"


def ensure_store(store: Path, shards: Path | None, depth: int, weights: str):
    """(the feature store at `store`, the shards folder it came from or None, why None):
    checked fresh, resumed or built from `shards` (default: the folder the store recorded,
    else `work/shards/train` to build a missing one).

    Raises:
        UserError: no store and no shards; a stale store or one made from other shards; an
            unfinished store whose own shards are not at hand (resuming from others would mix
            data).
    """
    store = Path(store)
    if not (store / "zarr.json").is_file():
        if store.exists():
            open_store(store)  # not a zarr store: names what is wrong with it
        return _build(store, Path(shards or paths.SHARDS_TRAIN), depth, weights)
    partial = open_store(store, require_complete=False)
    folder, manifest, note = find_shards(partial, shards)
    finished = partial.complete or "complete" not in partial.attrs
    other = manifest is None or {"classes", "source"} & set(
        stale_keys(partial.attrs, engine_recipe(manifest))
    )
    if not finished and other:
        raise _unfinished_elsewhere(store, folder or shards or partial.source.get("folder"))
    check_fresh(partial, manifest, folder)
    if finished:
        return partial, folder, note
    _extract(folder, store, _resume_settings(partial.attrs))
    return open_store(store), folder, None


def _build(store: Path, shards: Path, depth: int, weights: str):
    if read_manifest_if_any(shards) is None:
        raise UserError(
            f"feature store {store} does not exist and there are no shards at {shards} to "
            "build it from; run `engine shard data/train` first or pass --features/--shards"
        )

    depth = max(depth, FeatureConfig().depth)
    log.info("building feature store %s (depth %d) from %s", store, depth, shards)
    _extract(shards, store, {"depth": depth, "weights": weights})
    return open_store(store), shards, None


def _unfinished_elsewhere(store: Path, shards) -> UserError:
    """--force would be the wrong advice here: it would overwrite the store with other data."""
    return UserError(
        f"feature store {store} is unfinished and was made from other shards than {shards}; "
        f"pass the --shards it was made from to finish it, or delete {store} to rebuild it"
    )


def _resume_settings(attrs: dict) -> dict:
    """The FeatureConfig values an unfinished store was started with (so it resumes as is)."""
    weights = (attrs.get("weights") or {}).get("name") or OPENAI
    return {"depth": int(attrs.get("depth", 0)), "views": int(attrs.get("views", 1)),
            "weights": weights}  # fmt: skip


def _extract(shards: Path, store: Path, settings: dict) -> None:

    extract(shards, store, FeatureConfig(**settings))


def backbone_weights(attrs: dict, given: str, need: bool) -> str | None:
    """The weights to load for a store: "openai", "random", a file path, or None.

    Args:
        attrs: the store's attributes (`weights`: name and sha256 of what made it).
        given: `--weights` (a file whose name matches the store's is used).
        need: whether the run needs the backbone (k >= 1); at k = 0 the head trains on the
            stored embeddings, so weights nobody can load only cost the merged image model.

    Raises:
        UserError: `need` and the store's weights are a file other than `given`.
    """
    name = (attrs.get("weights") or {}).get("name") or given
    if given not in (name, OPENAI) and Path(given).name != name:
        # The tail must continue the trunk that made the tokens: the store's weights win.
        # ("openai" is also the default, so only a --weights other than it can be reported.)
        log.warning(
            "--weights %s is not what made the feature store (%r): the run uses the store's",
            given,
            name,
        )
    if name in (OPENAI, RANDOM):
        return name
    if Path(given).is_file() and Path(given).name == name:
        return str(given)
    if need:
        raise UserError(
            f"the feature store was made with weights {name!r}; pass that file with --weights"
        )
    log.warning(
        "the feature store was made with weights %r, which are not at hand: the head trains "
        "on the stored embeddings and model.pt predicts from feature stores only; pass that "
        "file with --weights for a model that predicts from images",
        name,
    )
    return None


def load_backbone(attrs: dict, weights: str):
    """The CLIP model named by `weights`, checked against the store's recorded sha256."""

    clip = clip_model.load_clip(weights, "cpu")  # via the module: tests swap in a tiny CLIP
    sha = (attrs.get("weights") or {}).get("sha256")
    if sha and clip.weights_info.get("sha256") not in (None, sha):
        raise UserError(f"weights {weights} do not match the store's (sha256 {sha[:12]}...)")
    return clip
