"""Where every sample's JPEG lies, and how big it is: the decoders' view of one rank's shards.

Built from the shard layer (shards.format): per sample its global index, key, shard, byte
offset and size inside the tar; the image width and height (recorded by `engine shard` in
each sample's json) are read once per shard, the first time a batch touches it. JPEG bytes
are slices of a read-only mmap of the tar, so any worker can read any sample without a
syscall and batches come out in store order.

Usage:
    cat = load_catalog("work/shards/train", rank=0, world_size=1)
    jpeg = cat.read(0)                       # bytes
    views = cat.jpeg_views(range(0, 250))    # zero-copy uint8 arrays
    widths, heights = cat.image_sizes(range(0, 250))
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from engine.errors import UserError
from shards.format import (
    ShardEntry,
    image_sizes,
    open_shards,
    parse_json_members,
    shard_samples,
    tar_bytes,
)

JPEG_EXT = "jpg"


@dataclass
class Catalog:
    """The samples one rank owns, in store order.

    Attributes:
        indices: (n,) int64 global store-order index of each sample.
        keys: `__key__` of each sample.
        shard: (n,) int32 position in `entries` of each sample's shard.
        offsets, sizes: (n,) int64 byte range of each sample's `jpg` member inside its tar.
        json_offsets, json_sizes: the same for its `json` member (size -1: none).
        entries: the shards this catalog reads.
    """

    indices: np.ndarray
    keys: list[str]
    shard: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray
    json_offsets: np.ndarray
    json_sizes: np.ndarray
    entries: list[ShardEntry]
    _widths: np.ndarray = field(init=False, repr=False)
    _heights: np.ndarray = field(init=False, repr=False)
    _maps: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _sized: set[int] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        self._widths = np.zeros(len(self.indices), np.int64)
        self._heights = np.zeros(len(self.indices), np.int64)
        # First catalog position of each shard, so a shard's metadata lands at the right rows.
        self._starts = np.searchsorted(self.shard, np.arange(len(self.entries)))

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def tars(self) -> list[str]:
        """Tar path of each sample."""
        return [str(self.entries[s].tar) for s in self.shard]

    def _map(self, s: int) -> np.ndarray:
        data = self._maps.get(s)
        if data is None:  # mapped lazily, so each DataLoader worker maps its own after fork
            data = self._maps[s] = tar_bytes(self.entries[s].tar)
        return data

    def read(self, i: int) -> bytes:
        """JPEG bytes of the i-th sample of this catalog (not the global index)."""
        o, n = int(self.offsets[i]), int(self.sizes[i])
        return self._map(int(self.shard[i]))[o : o + n].tobytes()

    def jpeg_views(self, positions) -> list[np.ndarray]:
        """Zero-copy uint8 views of the JPEGs at catalog positions `positions`."""
        p = np.asarray(positions, dtype=np.int64)
        shards, offsets, ends = self.shard[p], self.offsets[p], self.offsets[p] + self.sizes[p]
        maps = {int(s): self._map(int(s)) for s in np.unique(shards)}
        return [
            maps[s][o:e]
            for s, o, e in zip(shards.tolist(), offsets.tolist(), ends.tolist(), strict=True)
        ]

    def image_sizes(self, positions) -> tuple[np.ndarray, np.ndarray]:
        """((n,) widths, (n,) heights) of the samples at `positions`, from shard metadata."""
        p = np.asarray(positions, dtype=np.int64)
        for s in np.unique(self.shard[p]).tolist():
            if s not in self._sized:
                self._load_sizes(s)
        return self._widths[p], self._heights[p]

    def _load_sizes(self, s: int) -> None:
        with self._lock:  # feeder threads may reach a new shard together; read it once
            if s in self._sized:
                return
            # A catalog holds whole shards, so a shard's rows are contiguous from its start.
            start = int(self._starts[s])
            rows = slice(start, start + self.entries[s].count)
            data = memoryview(self._map(s))
            jsons = zip(
                self.json_offsets[rows].tolist(), self.json_sizes[rows].tolist(), strict=True
            )
            jpegs = zip(self.offsets[rows].tolist(), self.sizes[rows].tolist(), strict=True)
            try:
                infos = parse_json_members(data, [(o, n) if n >= 0 else None for o, n in jsons])
            except ValueError as err:
                raise UserError(
                    f"bad sample metadata in {self.entries[s].tar}: {err}; "
                    "re-pack with `engine shard --force`"
                ) from err
            widths, heights = image_sizes(data, infos, list(jpegs))
            self._widths[rows], self._heights[rows] = widths, heights
            self._sized.add(s)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"] = {}
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._maps.clear()


def load_catalog(shards, *, rank: int = 0, world_size: int = 1, shard_ids=None) -> Catalog:
    """Catalog of the shards rank `rank` of `world_size` owns (shard s with s % W == r).

    Args:
        shards: a shard folder or an opened `shards.format.ShardSet`.
        shard_ids: when given, keeps only those shards (a resumed feature pass decodes only
            the shards whose chunks are missing); global indices stay those of the whole split.
    """
    if not 0 <= rank < world_size:
        raise UserError(f"rank {rank} is not in 0..{world_size - 1} (world_size {world_size})")
    wanted = None if shard_ids is None else set(shard_ids)
    shard_set = open_shards(shards)
    entries = [
        e
        for s, e in enumerate(shard_set.entries)
        if s % world_size == rank and (wanted is None or s in wanted)
    ]
    indices, keys, shard, offsets, sizes, json_ranges = [], [], [], [], [], []
    for s, entry in enumerate(entries):
        for position, (key, members) in enumerate(shard_samples(entry)):
            if JPEG_EXT not in members:
                raise UserError(f"sample {key!r} in {entry.tar} has no '{JPEG_EXT}' member")
            indices.append(entry.offset + position)
            keys.append(key)
            shard.append(s)
            offsets.append(members[JPEG_EXT][0])
            sizes.append(members[JPEG_EXT][1])
            json_ranges.append(members.get("json", (0, -1)))
    return Catalog(
        np.asarray(indices, np.int64),
        keys,
        np.asarray(shard, np.int32),
        np.asarray(offsets, np.int64),
        np.asarray(sizes, np.int64),
        np.asarray([o for o, _ in json_ranges], np.int64),
        np.asarray([n for _, n in json_ranges], np.int64),
        entries,
    )
