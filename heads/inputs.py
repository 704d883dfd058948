"""A run's inputs, checked before anything is written: the feature store and its weights.

    store = ensure_store(features, shards, depth=2, weights="openai")   # built or resumed
    check_store_matches(store_attrs, store, shards)   # same shards? (fingerprint, N, classes)
    weights = backbone_weights(store_attrs, "openai", need=True)          # name, file or None

A store remembers the shards it was made from (`source`: fingerprint and sample count) and
their class list; `check_store_matches` is the one comparison train, predict and screen use,
so a stale store (the shards were re-packed) or a foreign one (another folder) is refused
instead of trained on silently.
"""

from __future__ import annotations

import logging
from pathlib import Path

from engine.errors import UserError

log = logging.getLogger(__name__)

RANDOM = "random"
OPENAI = "openai"


def read_manifest_if_any(shards: Path) -> dict | None:
    """The shard folder's manifest, or None when there are no shards there."""
    if not (Path(shards) / "manifest.json").is_file():
        return None
    from shards.manifest import load_manifest

    return load_manifest(Path(shards))


def store_mismatch(attrs: dict, manifest: dict) -> list[str]:
    """What differs between a store's recorded source and a shard manifest ([] = same)."""
    source = attrs.get("source") or {}
    differs = []
    if source.get("fingerprint") and source["fingerprint"] != manifest.get("fingerprint"):
        differs.append(
            f"fingerprint {str(source['fingerprint'])[:12]} vs "
            f"{str(manifest.get('fingerprint'))[:12]}"
        )
    if "num_samples" in source and int(source["num_samples"]) != int(manifest["num_samples"]):
        differs.append(f"{source['num_samples']} vs {manifest['num_samples']} samples")
    classes = list(attrs.get("classes") or [])
    if classes != list(manifest.get("classes") or []):
        differs.append(f"{len(classes)} vs {len(manifest.get('classes') or [])} classes")
    return differs


def check_store_matches(attrs: dict, store: Path, shards: Path) -> None:
    """Refuse a store that was not made from the shards at `shards` (when there are any)."""
    manifest = read_manifest_if_any(shards)
    if manifest is None:
        return
    differs = store_mismatch(attrs, manifest)
    if differs:
        raise UserError(
            f"feature store {store} was not made from the shards in {shards} "
            f"({'; '.join(differs)}); rebuild it with `engine features {shards} --out {store} "
            "--force`, or pass the --shards it was made from"
        )


def _store_state(store: Path) -> tuple[dict, bool] | None:
    """(attrs, complete) of the store at `store`, None when there is no store there."""
    if not (store / "zarr.json").is_file():
        return None
    import zarr

    attrs = dict(zarr.open_group(str(store), mode="r").attrs)
    return attrs, bool(attrs.get("complete", True))


def ensure_store(store: Path, shards: Path, depth: int, weights: str) -> Path:
    """The feature store at `store`: checked against `shards`, resumed or built from them.

    Raises:
        UserError: no store and no shards; a store made from other shards; an unfinished
            store whose own shards are not at `shards` (resuming from others would mix data).
    """
    store, shards = Path(store), Path(shards)
    state = _store_state(store)
    manifest = read_manifest_if_any(shards)
    if state is None and store.exists():
        return store  # not a zarr store: load_features names what is wrong with it
    if state is not None:
        attrs, complete = state
        if manifest is not None and store_mismatch(attrs, manifest):
            if not complete:
                raise _unfinished_elsewhere(store, shards)
            check_store_matches(attrs, store, shards)
        if complete:
            return store
        if manifest is None:
            raise _unfinished_elsewhere(store, shards)
        return _extract(shards, store, _resume_settings(attrs))
    if manifest is None:
        raise UserError(
            f"feature store {store} does not exist and there are no shards at {shards} to "
            "build it from; run `engine shard data/train` first or pass --features/--shards"
        )
    from features.config import FeatureConfig

    depth = max(depth, FeatureConfig().depth)
    log.info("building feature store %s (depth %d) from %s", store, depth, shards)
    return _extract(shards, store, {"depth": depth, "weights": weights})


def _unfinished_elsewhere(store: Path, shards: Path) -> UserError:
    return UserError(
        f"feature store {store} is unfinished and was made from other shards than {shards}; "
        f"pass the --shards it was made from to finish it, or delete {store} to rebuild it"
    )


def _resume_settings(attrs: dict) -> dict:
    """The FeatureConfig values an unfinished store was started with (so it resumes as is)."""
    weights = (attrs.get("weights") or {}).get("name") or OPENAI
    return {"depth": int(attrs.get("depth", 0)), "views": int(attrs.get("views", 1)),
            "weights": weights}  # fmt: skip


def _extract(shards: Path, store: Path, settings: dict) -> Path:
    from features.config import FeatureConfig
    from features.extract import extract

    return Path(extract(shards, store, FeatureConfig(**settings)))


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
    from features.model import load_clip

    clip = load_clip(weights, "cpu")
    sha = (attrs.get("weights") or {}).get("sha256")
    if sha and clip.weights_info.get("sha256") not in (None, sha):
        raise UserError(f"weights {weights} do not match the store's (sha256 {sha[:12]}...)")
    return clip
