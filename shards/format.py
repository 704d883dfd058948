"""The one way into a packed shard folder: manifest, `.idx` offsets, bytes and sample metadata.

The manifest is read and checked once (`open_shards`) and the resulting `ShardSet` is what
the tar reader (shards.reader), the decode catalog (shards.decode.catalog) and the feature
metadata (features.meta) take; each of them also accepts a folder path and opens it here.
Member offsets come from the DALI index beside each shard (`v1.2 N`, then `ext offset size
name ...` per sample, as DALI's `wds2idx` writes it), or from a scan of the tar headers when
a shard has none. Bytes are slices of a read-only mmap of the tar: no syscall per sample.

    shards = open_shards("work/shards/train")
    for entry in shards.entries:
        meta = read_shard_meta(entry)        # keys, paths, labels, widths, heights
        jpeg = tar_bytes(entry.tar)[o : o + n]
"""

from __future__ import annotations

import io
import json
import mmap
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from engine.errors import UserError
from shards.manifest import MANIFEST_NAME, load_manifest
from shards.truncated import load_truncated_images

REPACK = "re-pack with `engine shard --force`"
# (key, {extension: (byte offset of the member's data, size)}) for one sample, in tar order.
IndexedSample = tuple[str, dict[str, tuple[int, int]]]


@dataclass(frozen=True)
class ShardEntry:
    """One shard: its tar, DALI index (None when absent), sample count, global first index."""

    tar: Path
    idx: Path | None
    count: int
    offset: int


@dataclass(frozen=True)
class ShardSet:
    """A shard folder whose manifest has been read and checked once."""

    root: Path
    manifest: dict
    entries: tuple[ShardEntry, ...]

    @property
    def num_samples(self) -> int:
        return int(self.manifest["num_samples"])

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME


@dataclass
class ShardMeta:
    """Per-sample metadata of one shard, in tar (= store) order; `offset` = global index of
    row 0. Width and height are those of the stored JPEG (0 when it cannot be read at all)."""

    offset: int
    keys: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)


def open_shards(source) -> ShardSet:
    """The checked `ShardSet` of a folder (a `ShardSet` is returned as it is).

    Shards are in store order: sorted by name, which is the order `engine shard` wrote them.

    Raises:
        UserError: no manifest, or one that is truncated, foreign or inconsistent.
    """
    if isinstance(source, ShardSet):
        return source
    root = Path(source)
    manifest = load_manifest(root)
    entries, offset = [], 0
    for shard in sorted(manifest["shards"], key=lambda s: s["name"]):
        idx = root / shard["index"] if shard.get("index") else None
        entries.append(ShardEntry(root / shard["name"], idx, int(shard["count"]), offset))
        offset += int(shard["count"])
    return ShardSet(root, manifest, tuple(entries))


def split_name(name: str) -> tuple[str, str]:
    """(key, extension) split at the first dot of the basename, as WebDataset and DALI do."""
    dot = name.find(".", name.rfind("/") + 1)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1 :])


def read_index(idx: Path) -> list[IndexedSample]:
    """Samples of a DALI webdataset index file.

    Raises:
        UserError: the file is not a DALI index or has a malformed line.
    """
    try:
        lines = Path(idx).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read the sample index {idx}: {err}") from err
    header = lines[0].split() if lines else []
    if len(header) != 2 or not header[0].startswith("v1."):
        raise UserError(f"{idx} is not a DALI webdataset index; delete it to rebuild from the tar")
    samples = []
    for line in lines[1:]:
        fields = line.split()
        if not fields or len(fields) % 4:
            raise UserError(
                f"{idx} has a malformed line {line!r}; delete it to rebuild from the tar"
            )
        try:
            members = {e: (int(o), int(s)) for e, o, s, _ in zip(*[iter(fields)] * 4, strict=True)}
        except ValueError as err:
            raise UserError(f"{idx} has a malformed line {line!r}; delete it") from err
        samples.append((split_name(fields[3])[0], members))
    return samples


def scan_tar(tar: Path) -> list[IndexedSample]:
    """Samples of a tar from its headers, for shards without an index file."""
    samples: list[IndexedSample] = []
    try:
        with tarfile.open(tar, "r:") as archive:
            for info in archive:
                if not info.isfile():
                    continue
                key, ext = split_name(info.name)
                if not key or key.endswith("/"):  # hidden files, as wds2idx skips them
                    continue
                if not samples or samples[-1][0] != key:
                    samples.append((key, {}))
                samples[-1][1][ext] = (info.offset_data, info.size)
    except (tarfile.TarError, OSError) as err:
        raise UserError(f"{tar} is not a readable tar file ({err}); {REPACK}") from err
    return samples


def shard_samples(entry: ShardEntry) -> list[IndexedSample]:
    """The samples of one shard, checked against the manifest's count and the tar's size.

    Raises:
        UserError: the tar is missing, is not a tar, is shorter than its index says, or holds
            a different number of samples than the manifest.
    """
    if not entry.tar.is_file():
        raise UserError(f"shard listed in the manifest is missing: {entry.tar}")
    _check_tar_header(entry.tar)
    use_index = entry.idx is not None and entry.idx.is_file()
    samples = read_index(entry.idx) if use_index else scan_tar(entry.tar)
    if len(samples) != entry.count:
        raise UserError(
            f"{entry.tar} holds {len(samples)} samples but the manifest says {entry.count}; "
            f"{REPACK}"
        )
    end_of_file = entry.tar.stat().st_size
    for key, members in samples:
        if any(o + s > end_of_file for o, s in members.values()):
            raise UserError(
                f"{entry.tar} is truncated: sample {key!r} ends past the end of the file"
            )
    return samples


def _check_tar_header(tar: Path) -> None:
    """Cheap check that `tar` starts with a POSIX tar header, before offsets are trusted."""
    with open(tar, "rb") as f:
        header = f.read(512)
    if len(header) < 512 or header[257:262] != b"ustar":
        raise UserError(f"{tar} is not a tar file (no tar header); re-pack it with `engine shard`")


def tar_bytes(tar: Path) -> np.ndarray:
    """The whole tar as a read-only uint8 array over an mmap; slices are zero-copy views."""
    with open(tar, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(mapped, dtype=np.uint8)


def read_shard_meta(entry: ShardEntry, samples: list[IndexedSample] | None = None) -> ShardMeta:
    """Keys, paths, labels and image sizes of one shard, from its small `json`/`cls` members.

    Args:
        entry: the shard.
        samples: its `shard_samples`, when the caller has them already.

    Raises:
        UserError: the shard is unreadable or its metadata is malformed.
    """
    samples = shard_samples(entry) if samples is None else samples
    data = memoryview(tar_bytes(entry.tar))
    json_ranges = [m.get("json") for _, m in samples]
    jpeg_ranges = [m.get("jpg") for _, m in samples]
    cls_ranges = [m.get("cls") for _, m in samples]
    try:
        infos = parse_json_members(data, json_ranges)
        labels = [-1 if r is None else int(bytes(data[r[0] : r[0] + r[1]])) for r in cls_ranges]
    except (ValueError, TypeError) as err:  # JSONDecodeError is a ValueError
        raise UserError(f"bad sample metadata in {entry.tar}: {err}; {REPACK}") from err
    widths, heights = image_sizes(data, infos, jpeg_ranges)
    return ShardMeta(
        entry.offset,
        keys=[key for key, _ in samples],
        paths=[info.get("path", key) for info, (key, _) in zip(infos, samples, strict=True)],
        labels=labels,
        widths=widths,
        heights=heights,
    )


def parse_json_members(data: memoryview, ranges: list) -> list[dict]:
    """The json member of every sample (an empty dict where a sample has none), parsed in one
    `json.loads` over the members joined into one array: a shard costs one C call.

    Raises:
        ValueError: a member is not JSON or not an object.
    """
    parts = [b"{}" if r is None else data[r[0] : r[0] + r[1]] for r in ranges]
    infos = json.loads(b"[" + b",".join(parts) + b"]")
    if not all(isinstance(info, dict) for info in infos):
        raise ValueError("a sample's json member is not a JSON object")
    return infos


def image_sizes(data: memoryview, infos: list[dict], jpeg_ranges: list) -> tuple[list, list]:
    """(widths, heights) of a shard's stored JPEGs: as `engine shard` records them in each
    sample's json; shards written before that have their JPEG headers parsed instead."""
    widths, heights = [], []
    for info, r in zip(infos, jpeg_ranges, strict=True):
        width, height = info.get("width"), info.get("height")
        if not (isinstance(width, int) and isinstance(height, int)):
            width, height = jpeg_size(bytes(data[r[0] : r[0] + r[1]])) if r else (0, 0)
        widths.append(width)
        heights.append(height)
    return widths, heights


def jpeg_size(jpeg: bytes) -> tuple[int, int]:
    """(width, height) from the JPEG header; a damaged header is decoded tolerantly; (0, 0)
    when not even that works (the decoders then report the sample by key)."""
    try:
        with Image.open(io.BytesIO(jpeg)) as img:
            return img.size
    except (OSError, SyntaxError, ValueError):
        pass
    try:
        with load_truncated_images(), Image.open(io.BytesIO(jpeg)) as img:
            img.load()
            return img.size
    except (OSError, SyntaxError, ValueError):
        return 0, 0
