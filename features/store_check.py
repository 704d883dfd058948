"""Validation of a feature store's attributes against its arrays, before any work uses them.

    check_store("work/features/train.zarr", attrs, arrays, on_disk=True)   # UserError or None

`features.store.FeatureStore` calls this once when it is opened (or built in memory), so every
stage (train, screen, predict, the feature pass resuming a store) reads attributes that are
known to be well-typed and consistent with the arrays: a hand-edited or foreign store is
refused in one line naming the attribute, instead of a TypeError deep in a stage or an
(N, K) allocation sized by a wrong class list.

Checked, cheapest first: `depth` an integer in 0..12, `views` a positive integer, `classes` a
list of strings, `weights` a mapping; every array DESIGN.md lists is present with one length N,
the right dtypes (on disk), `tokens` (V, N, L, W) with V = `views`; at most 10000 classes (ids
are four digits), labels in -1..K-1.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from engine.errors import UserError

MAX_DEPTH = 12  # ViT-B/32 has 12 blocks
MAX_CLASSES = 10_000  # class ids are four digits (0000..9999) in every prediction row
REQUIRED = ("keys", "paths", "labels", "embed")
DTYPES = {"labels": np.dtype("int32"), "embed": np.dtype("float16"), "tokens": np.dtype("float16")}


def int_attr(attrs: Mapping, name: str, low: int, high: int | None, where) -> int:
    """The attribute `name` as an int in low..high (JSON booleans and strings refused)."""
    value = attrs.get(name)
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        span = f"{low}..{high}" if high is not None else f">= {low}"
        raise UserError(
            f"feature store {where}: attribute {name} is {value!r}, expected an integer in "
            f"{span}; {redo(where)}"
        )
    return int(value)


def redo(where) -> str:
    return f"re-create it with `engine features SHARDS --out {where} --force`"


def check_store(where, attrs: Mapping, arrays: Mapping, *, on_disk: bool = True) -> None:
    """Refuse (UserError, one line) a store whose attributes or arrays do not fit together.

    Args:
        where: the store's path (or a name for an in-memory store), for the message.
        attrs: its group attributes.
        arrays: name -> array-like (Zarr or NumPy) for the arrays it holds.
        on_disk: also check DESIGN.md's dtypes (an in-memory store may hold float32).
    """
    depth = int_attr(attrs, "depth", 0, MAX_DEPTH, where)
    views = int_attr(attrs, "views", 1, None, where)
    classes = attrs.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise UserError(
            f"feature store {where}: attribute classes must be a list of folder names, got "
            f"{type(classes).__name__}; {redo(where)}"
        )
    if len(classes) > MAX_CLASSES:
        raise UserError(
            f"feature store {where}: attribute classes lists {len(classes)} classes, more than "
            f"the {MAX_CLASSES} four-digit class ids can name; {redo(where)}"
        )
    if not isinstance(attrs.get("weights", {}), Mapping):
        raise UserError(f"feature store {where}: attribute weights is not a mapping; {redo(where)}")
    needed = list(REQUIRED) + (["tokens"] if depth >= 1 else [])
    missing = [name for name in needed if name not in arrays]
    if missing:
        raise UserError(f"{where} lacks the arrays {missing}; {redo(where)}")
    _check_shapes(where, arrays, needed, views)
    if on_disk:
        for name in needed:
            dtype = DTYPES.get(name)
            if dtype is not None and arrays[name].dtype != dtype:
                raise UserError(
                    f"{where}/{name} is {arrays[name].dtype} {arrays[name].shape}, expected "
                    f"{dtype} {tuple(arrays[name].shape)}"
                )
    _check_labels(where, np.asarray(arrays["labels"][:]), len(classes))


def _check_shapes(where, arrays: Mapping, needed: list[str], views: int) -> None:
    """Refuse an array whose shape disagrees with `labels` (N,) or `views`."""
    n = arrays["labels"].shape[0]
    expected = {"keys": (n,), "paths": (n,), "labels": (n,)}
    embed = arrays["embed"].shape
    expected["embed"] = (n, embed[1] if len(embed) == 2 else -1)
    if "tokens" in needed:
        tokens = arrays["tokens"].shape
        expected["tokens"] = (views, n, *tokens[2:]) if len(tokens) == 4 else (views, n, -1, -1)
    for name in needed:
        shape = tuple(arrays[name].shape)
        if shape != expected[name]:
            hint = " (attribute views)" if name == "tokens" else ""
            raise UserError(
                f"{where}/{name} has shape {shape}, expected {expected[name]}{hint}; {redo(where)}"
            )


def _check_labels(where, labels: np.ndarray, num_classes: int) -> None:
    """Labels in -1..K-1: a label outside the class list would index past every (N, K) array."""
    if not len(labels):
        return
    low, high = int(labels.min()), int(labels.max())
    if low < -1 or high >= num_classes:
        raise UserError(
            f"feature store {where}: labels span {low}..{high} but attribute classes lists "
            f"{num_classes} classes (labels must be -1..{num_classes - 1}); {redo(where)}"
        )
