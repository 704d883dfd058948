"""Read packed shards back in store order (shards sorted, tar order inside each).

for sample in iter_samples(Path("work/shards/train")):
    sample.index, sample.key, sample.jpeg, sample.label, sample.meta["path"]
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from shards.index import split_name
from shards.manifest import load_manifest


@dataclass(frozen=True)
class ShardFile:
    """One shard: its tar and DALI index, sample count and global index of its first sample."""

    tar: Path
    idx: Path
    count: int
    offset: int


@dataclass(frozen=True)
class Sample:
    """One stored image. `label` is the class index, -1 for unlabeled splits."""

    index: int
    key: str
    jpeg: bytes
    label: int
    meta: dict


def shard_files(shard_dir: Path) -> list[ShardFile]:
    """The shards of a packed folder, in store order (from its manifest)."""
    shard_dir = Path(shard_dir)
    manifest = load_manifest(shard_dir)
    files, offset = [], 0
    for shard in manifest["shards"]:
        tar, idx = shard_dir / shard["name"], shard_dir / shard["index"]
        files.append(ShardFile(tar, idx, shard["count"], offset))
        offset += shard["count"]
    return files


def iter_samples(shard_dir: Path, shard_ids: Iterable[int] | None = None) -> Iterator[Sample]:
    """Yield the samples of the given shards (all by default) in store order.

    Raises:
        ValueError: a shard holds a different number of samples than the manifest says
            (the shard is named in the message).
    """
    files = shard_files(shard_dir)
    ids = range(len(files)) if shard_ids is None else sorted(shard_ids)
    for s in ids:
        shard = files[s]
        n = 0
        for n, (key, members) in enumerate(_iter_tar_groups(shard.tar), start=1):
            yield _to_sample(shard.offset + n - 1, key, members)
        if n != shard.count:
            raise ValueError(f"{shard.tar}: {n} samples, manifest says {shard.count}")


def _iter_tar_groups(tar_path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per sample, members grouped as WebDataset and DALI do."""
    key, members = None, {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            if not member.isreg():
                continue
            name, ext = split_name(member.name)
            if name != key and key is not None:
                yield key, members
                members = {}
            key = name
            members[ext] = tar.extractfile(member).read()
    if key is not None:
        yield key, members


def _to_sample(index: int, key: str, members: dict[str, bytes]) -> Sample:
    label = int(members["cls"]) if "cls" in members else -1
    meta = json.loads(members["json"]) if "json" in members else {}
    return Sample(index, key, members["jpg"], label, meta)
