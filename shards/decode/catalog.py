"""Where every sample's JPEG lies: (global index, key, tar, byte offset, size) per sample.

The decoders read JPEG bytes by offset (os.pread) instead of streaming tars, so any worker
can read any sample and batches come out in store order. Offsets come from the DALI index
file beside each shard (`v1.2 N` then `ext offset size name ...` per sample, as `wds2idx`
writes it); a shard without one is scanned with `tarfile`.

Usage:
    cat = load_catalog("work/shards/train", rank=0, world_size=1)
    jpeg = cat.read(0)
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import UserError
from shards.manifest import load_manifest

JPEG_EXT = "jpg"


@dataclass
class Catalog:
    """The samples one rank owns, in store order.

    Attributes:
        indices: global store-order index of each sample.
        keys: `__key__` of each sample.
        tars: tar path of each sample.
        offsets, sizes: byte range of each sample's `jpg` member inside its tar.
    """

    indices: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    tars: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    _fds: dict[str, int] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, i: int) -> bytes:
        """JPEG bytes of the i-th sample of this catalog (not the global index)."""
        fd = self._fds.get(self.tars[i])
        if fd is None:
            # Opened lazily so each DataLoader worker gets its own descriptors after fork.
            fd = self._fds[self.tars[i]] = os.open(self.tars[i], os.O_RDONLY)
        return os.pread(fd, self.sizes[i], self.offsets[i])

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fds"] = {}
        return state

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def load_catalog(shard_dir, *, rank: int = 0, world_size: int = 1, shard_ids=None) -> Catalog:
    """Catalog of the shards rank `rank` of `world_size` owns (shard s with s % W == r).

    `shard_ids`, when given, keeps only those shards (a resumed feature pass decodes only the
    shards whose chunks are missing); global indices stay those of the whole split.
    """
    wanted = None if shard_ids is None else set(shard_ids)
    if not 0 <= rank < world_size:
        raise UserError(f"rank {rank} is not in 0..{world_size - 1} (world_size {world_size})")
    shard_dir = Path(shard_dir)
    manifest = load_manifest(shard_dir)
    shards = sorted(manifest["shards"], key=lambda s: s["name"])
    catalog = Catalog()
    start = 0
    for s, shard in enumerate(shards):
        if s % world_size == rank and (wanted is None or s in wanted):
            _add_shard(catalog, shard_dir, shard, start)
        start += int(shard["count"])
    if start != manifest["num_samples"]:
        raise UserError(
            f"{shard_dir / 'manifest.json'}: shards hold {start} samples but num_samples is "
            f"{manifest['num_samples']}; re-pack with `engine shard --force`"
        )
    return catalog


def _add_shard(catalog: Catalog, shard_dir: Path, shard: dict, start: int) -> None:
    tar = shard_dir / shard["name"]
    if not tar.is_file():
        raise UserError(f"shard listed in the manifest is missing: {tar}")
    _check_tar_header(tar)
    idx = shard_dir / shard["index"] if shard.get("index") else None
    members = _read_index(idx) if idx is not None and idx.is_file() else _scan_tar(tar)
    if len(members) != int(shard["count"]):
        raise UserError(
            f"{tar} holds {len(members)} samples but the manifest says {shard['count']}; "
            "re-pack with `engine shard --force`"
        )
    end_of_file = tar.stat().st_size
    for position, (key, components) in enumerate(members):
        if JPEG_EXT not in components:
            raise UserError(f"sample {key!r} in {tar} has no '{JPEG_EXT}' member")
        offset, size = components[JPEG_EXT]
        if offset + size > end_of_file:
            raise UserError(f"{tar} is truncated: sample {key!r} ends past the end of the file")
        catalog.indices.append(start + position)
        catalog.keys.append(key)
        catalog.tars.append(str(tar))
        catalog.offsets.append(offset)
        catalog.sizes.append(size)


def _check_tar_header(tar: Path) -> None:
    """Cheap check that `tar` starts with a POSIX tar header, before offsets are trusted."""
    with open(tar, "rb") as f:
        header = f.read(512)
    if len(header) < 512 or header[257:262] != b"ustar":
        raise UserError(f"{tar} is not a tar file (no tar header); re-pack it with `engine shard`")


def split_name(name: str) -> tuple[str, str]:
    """(key, extension) split at the first dot of the basename, as WebDataset and DALI do."""
    dot = name.find(".", name.rfind("/") + 1)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1 :])


def _read_index(idx: Path) -> list[tuple[str, dict]]:
    """Members of a DALI webdataset index file: [(key, {ext: (offset, size)})]."""
    lines = idx.read_text().splitlines()
    header = lines[0].split() if lines else []
    if len(header) != 2 or not header[0].startswith("v1."):
        raise UserError(f"{idx} is not a DALI webdataset index; delete it to rebuild from the tar")
    members = []
    for line in lines[1:]:
        fields = line.split()
        if not fields or len(fields) % 4:
            raise UserError(
                f"{idx} has a malformed line {line!r}; delete it to rebuild from the tar"
            )
        components = {}
        for ext, offset, size, _name in zip(*[iter(fields)] * 4, strict=True):
            components[ext] = (int(offset), int(size))
        members.append((split_name(fields[3])[0], components))
    return members


def _scan_tar(tar: Path) -> list[tuple[str, dict]]:
    """Members of a tar grouped into samples, for shards without an index file."""
    members: list[tuple[str, dict]] = []
    try:
        with tarfile.open(tar, "r:") as archive:
            for info in archive:
                if not info.isfile():
                    continue
                key, ext = split_name(info.name)
                if not members or members[-1][0] != key:
                    members.append((key, {}))
                members[-1][1][ext] = (info.offset_data, info.size)
    except (tarfile.TarError, OSError) as err:
        raise UserError(
            f"{tar} is not a readable tar file ({err}); re-pack it with `engine shard`"
        ) from err
    return members
