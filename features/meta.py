"""Keys, source paths and labels of a shard's samples, without reading its JPEGs.

Decoders yield only images and store indices; the store also needs each sample's key, path and
label. These live in the tiny `json` and `cls` members, whose byte ranges the DALI index beside
each shard lists, so a shard's metadata costs two small reads per sample, not a pass over its
JPEG bytes.

    meta = shard_meta(shard_dir)[3]       # ShardMeta of shard 3
    meta.keys, meta.paths, meta.labels    # in tar order; meta.offset = global index of row 0
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError


@dataclass
class ShardMeta:
    """Per-sample metadata of one shard, in tar (= store) order."""

    offset: int
    keys: list[str]
    paths: list[str]
    labels: list[int]


def read_shard_meta(tar: Path, idx: Path | None, offset: int, count: int) -> ShardMeta:
    """Metadata of one shard from its index (or, without one, a scan of the tar headers).

    Raises:
        UserError: the shard or its index is unreadable or disagrees with the manifest.
    """
    from shards.index import index_lines, split_name

    try:
        if idx is not None and Path(idx).is_file():
            lines = Path(idx).read_text(encoding="utf-8").splitlines()
        else:
            lines = index_lines(Path(tar))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read the sample index of {tar}: {err}") from err
    samples = lines[1:]
    if len(samples) != count:
        raise UserError(f"{tar} holds {len(samples)} samples, the manifest says {count}")
    meta = ShardMeta(offset, [], [], [])
    fd = os.open(tar, os.O_RDONLY)
    try:
        for line in samples:
            fields = line.split()
            members = {
                f[0]: (int(f[1]), int(f[2]), f[3]) for f in zip(*[iter(fields)] * 4, strict=True)
            }
            key = split_name(next(iter(members.values()))[2])[0]
            info = json.loads(_pread(fd, members, "json", tar)) if "json" in members else {}
            label = int(_pread(fd, members, "cls", tar)) if "cls" in members else -1
            meta.keys.append(key)
            meta.paths.append(info.get("path", key))
            meta.labels.append(label)
    except (ValueError, json.JSONDecodeError) as err:
        raise UserError(
            f"bad sample metadata in {tar}: {err}; re-pack with `engine shard`"
        ) from err
    finally:
        os.close(fd)
    return meta


def _pread(fd: int, members: dict, ext: str, tar: Path) -> bytes:
    _, size, _ = members[ext]
    data = os.pread(fd, size, members[ext][0])
    if len(data) != size:
        raise UserError(f"{tar} is truncated inside its '{ext}' member")
    return data


class MetaCache:
    """Metadata by global sample index, loading each shard once and forgetting it when asked.

    Memory holds only the shards currently being written (a rank works through its shards in
    order), so it does not grow with N.
    """

    def __init__(self, shard_dir: Path):
        from shards.reader import shard_files

        self.files = shard_files(Path(shard_dir))
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
            f = self.files[s]
            self._loaded[s] = read_shard_meta(f.tar, f.idx, f.offset, f.count)
        meta = self._loaded[s]
        a, b = start - meta.offset, stop - meta.offset
        if b > len(meta.keys):
            raise ValueError(f"rows {start}..{stop} cross the end of shard {s}")
        return meta.keys[a:b], meta.paths[a:b], meta.labels[a:b]

    def forget_before(self, index: int) -> None:
        """Drop shards that end at or before global index `index`."""
        for s in [s for s in self._loaded if self.files[s].offset + self.files[s].count <= index]:
            del self._loaded[s]
