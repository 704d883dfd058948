"""Reading a feature store (DESIGN.md format, whoever wrote it) into arrays for training.

    data = load_features("work/features/train.zarr")
    data.embed (N, 512), data.tokens (V, N, L, W) zarr array or None, data.labels (N,)

The trainer also accepts a `FeatureData` built in memory (tests, benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import UserError

STORE_FORMAT = "engine.features/1"


@dataclass
class FeatureData:
    """Arrays of one feature store.

    Attributes:
        embed: (N, D) L2-normalised embeddings of the frozen pretrained model.
        labels: (N,) int given labels, -1 when unlabeled.
        classes: class folder names (index = position).
        tokens: (V, N, L, W) array-like (NumPy or a lazy Zarr array), or None (depth 0).
        depth: blocks the cached tokens leave to compute.
        keys, paths: per-sample key and relative source path.
        attrs: the store's group attributes (weights, preprocess, ...).
    """

    embed: Any
    labels: np.ndarray
    classes: list[str]
    tokens: Any = None
    depth: int = 0
    keys: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    attrs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels).astype(np.int64)
        if self.depth > 0 and self.tokens is None:
            raise UserError(f"feature store of depth {self.depth} holds no tokens; rebuild it")

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    @property
    def num_views(self) -> int:
        return 0 if self.tokens is None else int(self.tokens.shape[0])


def _read_strings(arr) -> list[str]:
    return [str(s) for s in np.asarray(arr[:]).tolist()]


def load_features(store) -> FeatureData:
    """A `FeatureData` from a store path, a zarr group, an object with `.group`, or itself.

    Token arrays stay lazy (Zarr): the trainer reads them in chunks where they are needed.
    """
    if isinstance(store, FeatureData):
        return store
    group = store
    if isinstance(store, str | Path):
        from features.store import open_store  # the one validator: format, model, complete

        group = open_store(Path(store)).group
    elif hasattr(store, "group"):
        group = store.group
    attrs = dict(group.attrs)
    if attrs.get("format") != STORE_FORMAT:
        raise UserError(
            f"not an engine feature store (format {attrs.get('format')!r}, expected "
            f"{STORE_FORMAT!r}); rebuild it with `engine features`"
        )
    names = set(group.array_keys())
    depth = int(attrs.get("depth", 0))
    return FeatureData(
        embed=group["embed"],
        labels=np.asarray(group["labels"][:]),
        classes=list(attrs.get("classes", [])),
        tokens=group["tokens"] if "tokens" in names and depth > 0 else None,
        depth=depth,
        keys=_read_strings(group["keys"]) if "keys" in names else [],
        paths=_read_strings(group["paths"]) if "paths" in names else [],
        attrs=attrs,
    )


def one_hot_targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, K) float32 one-hot of the given labels; unlabeled rows (-1) are all zero."""
    targets = np.zeros((len(labels), num_classes), dtype=np.float32)
    ok = labels >= 0
    targets[np.nonzero(ok)[0], labels[ok]] = 1.0
    return targets
