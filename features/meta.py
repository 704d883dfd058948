"""Keys, source paths and labels of a shard's samples, without reading its JPEGs.

Decoders yield only images and store indices; the store also needs each sample's key, path and
label. These live in the tiny `json` and `cls` members, which the shard layer
(shards.format) reads by offset, so a shard's metadata costs no pass over its JPEG bytes.

    cache = MetaCache(shard_dir)          # or MetaCache(open_shards(shard_dir))
    keys, paths, labels = cache.rows(0, 256)
"""

from __future__ import annotations

from pathlib import Path

from shards.format import ShardEntry, ShardMeta, open_shards
from shards.format import read_shard_meta as _read_entry_meta

__all__ = ["MetaCache", "ShardMeta", "read_shard_meta"]


def read_shard_meta(tar: Path, idx: Path | None, offset: int, count: int) -> ShardMeta:
    """Metadata of one shard from its index (or, without one, a scan of the tar headers).

    Raises:
        UserError: the shard or its index is unreadable or disagrees with `count`.
    """
    return _read_entry_meta(ShardEntry(Path(tar), idx and Path(idx), count, offset))


class MetaCache:
    """Metadata by global sample index, loading each shard once and forgetting it when asked.

    Memory holds only the shards currently being written (a rank works through its shards in
    order), so it does not grow with N.
    """

    def __init__(self, shards):
        self.files = list(open_shards(shards).entries)
        self._loaded: dict[int, ShardMeta] = {}

    def shard_of(self, index: int) -> int:
        for s, f in enumerate(self.files):
            if f.offset <= index < f.offset + f.count:
                return s
        raise IndexError(f"sample {index} is not in any shard")

    def rows(self, start: int, stop: int) -> tuple[list[str], list[str], list[int]]:
        """(keys, paths, labels) of global rows [start, stop), which lie in one shard."""
        s = self.shard_of(start)
        if s not in self._loaded:
            self._loaded[s] = _read_entry_meta(self.files[s])
        meta = self._loaded[s]
        a, b = start - meta.offset, stop - meta.offset
        if b > len(meta.keys):
            raise ValueError(f"rows {start}..{stop} cross the end of shard {s}")
        return meta.keys[a:b], meta.paths[a:b], meta.labels[a:b]

    def forget_before(self, index: int) -> None:
        """Drop shards that end at or before global index `index`."""
        for s in [s for s in self._loaded if self.files[s].offset + self.files[s].count <= index]:
            del self._loaded[s]
