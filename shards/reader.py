"""Read packed shards back in store order (shards sorted, tar order inside each).

for sample in iter_samples(Path("work/shards/train")):
    sample.index, sample.key, sample.jpeg, sample.label, sample.meta["path"]

Offsets, counts and bytes come from the shard layer (shards.format); this module only turns
a shard's members into `Sample`s.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from shards.format import ShardEntry, open_shards, shard_samples, tar_bytes

# One shard, as the layer describes it (kept under its old name for the readers' callers).
ShardFile = ShardEntry


@dataclass(frozen=True)
class Sample:
    """One stored image. `label` is the class index, -1 for unlabeled splits."""

    index: int
    key: str
    jpeg: bytes
    label: int
    meta: dict


def shard_files(shards) -> list[ShardEntry]:
    """The shards of a packed folder (or an opened `ShardSet`), in store order."""
    return list(open_shards(shards).entries)


def iter_samples(shards, shard_ids: Iterable[int] | None = None) -> Iterator[Sample]:
    """Yield the samples of the given shards (all by default) in store order.

    Raises:
        UserError: a shard is unreadable or holds a different number of samples than the
            manifest says (the shard is named in the message).
    """
    entries = open_shards(shards).entries
    ids = range(len(entries)) if shard_ids is None else sorted(shard_ids)
    for s in ids:
        entry = entries[s]
        data = tar_bytes(entry.tar)
        for position, (key, members) in enumerate(shard_samples(entry)):
            parts = {ext: data[o : o + n].tobytes() for ext, (o, n) in members.items()}
            yield _to_sample(entry.offset + position, key, parts)


def _to_sample(index: int, key: str, members: dict[str, bytes]) -> Sample:
    label = int(members["cls"]) if "cls" in members else -1
    meta = json.loads(members["json"]) if "json" in members else {}
    return Sample(index, key, members["jpg"], label, meta)
