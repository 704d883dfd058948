"""Small JPEG thumbnails of chosen samples, read straight from packed shards.

    thumbs = read_thumbnails(Path("work/shards/train"), [3, 17, 4051], short_side=128)
    thumbs[17]          # JPEG bytes, short side 128 px (smaller images are not enlarged)
    data_uri(thumbs[17])  # "data:image/jpeg;base64,..." for a self-contained HTML page

Only the samples asked for are read: a shard's DALI `.idx` (through shards.format) names the
byte offset and size of each sample's `jpg` member, so an image is one slice of the tar's mmap,
never a walk through the tar. Pillow's `draft` then decodes the JPEG at 1/2, 1/4 or 1/8 scale inside the DCT (the
largest reduction that still leaves `short_side` pixels), about 4-16x less work than a full
decode. Together that keeps a page of a few hundred thumbnails to seconds on a 300k set.
"""

from __future__ import annotations

import base64
import bisect
import io
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from engine.errors import UserError
from shards.format import REPACK, ShardSet, open_shards, shard_samples, tar_bytes

log = logging.getLogger(__name__)

# ~128 px on the short side: enough to tell a leaf from a flower, small enough (~4-6 KB as
# JPEG) that a page of 200 cards with their trusted examples stays near 5 MB.
THUMB_SIDE = 128
# JPEG quality of the thumbnails: 75 is where artefacts stop being visible at this size.
THUMB_QUALITY = 75


class ShardsUnavailable(Exception):
    """The shards cannot give the thumbnails (missing, or packed from other images)."""


@dataclass(frozen=True)
class Location:
    """Where one sample's JPEG lies: its tar, the member's data offset and size, its key."""

    tar: Path
    offset: int
    size: int
    key: str


def check_shards(shard_dir, *, fingerprint: str | None = None, num_samples=None) -> ShardSet:
    """The shards' checked `ShardSet` when they are the ones a store was made from.

    Raises:
        ShardsUnavailable: no shards at `shard_dir`, or their fingerprint or sample count
            differ from what the store recorded (the message says which).
    """
    if not isinstance(shard_dir, ShardSet) and not (Path(shard_dir) / "manifest.json").is_file():
        raise ShardsUnavailable(f"no shards at {shard_dir} (no manifest.json)")
    try:
        shards = open_shards(shard_dir)
    except UserError as err:  # a damaged or foreign manifest: no thumbnails, and why
        raise ShardsUnavailable(str(err)) from err
    found = shards.manifest.get("fingerprint")
    if fingerprint and found not in (None, fingerprint):
        raise ShardsUnavailable(
            f"{shards.root} holds shards {found}, the store was made from {fingerprint}"
        )
    if num_samples is not None and shards.num_samples != int(num_samples):
        raise ShardsUnavailable(
            f"{shards.root} holds {shards.num_samples} samples, the store {num_samples}"
        )
    return shards


def locate(shards, indices: Iterable[int]) -> dict[int, Location]:
    """{global index: Location} for the given samples, reading only the `.idx` files of the
    shards they fall in (store order: shards by name, samples in tar order).

    Raises:
        IndexError: an index outside the folder's samples.
        UserError: a shard or its index is damaged (shards.format names it).
    """
    shards = open_shards(shards)
    starts = [entry.offset for entry in shards.entries]
    wanted: dict[int, list[int]] = {}
    for i in sorted({int(i) for i in indices}):
        if not 0 <= i < shards.num_samples:
            raise IndexError(f"sample {i} is outside the {shards.num_samples} of {shards.root}")
        wanted.setdefault(bisect.bisect_right(starts, i) - 1, []).append(i)
    found = {}
    for s, members in wanted.items():
        entry = shards.entries[s]
        samples = shard_samples(entry)  # from the .idx (checked against count and tar size)
        for i in members:
            key, parts = samples[i - entry.offset]
            if "jpg" not in parts:
                raise UserError(f"{entry.tar}: sample {key!r} has no jpg member; {REPACK}")
            found[i] = Location(entry.tar, *parts["jpg"], key)
    return found


def thumbnail(jpeg: bytes, short_side: int = THUMB_SIDE, quality: int = THUMB_QUALITY) -> bytes:
    """JPEG bytes of the image scaled to `short_side` on its short side (never enlarged)."""
    with Image.open(io.BytesIO(jpeg)) as im:
        width, height = im.size
        scale = short_side / min(width, height)
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        if scale < 1:
            im.draft("RGB", target)  # DCT-domain downscale: decodes 1/2..1/8 of the pixels
        rgb = im.convert("RGB")
    if scale < 1:
        rgb = rgb.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def read_thumbnails(
    shards,
    indices: Iterable[int],
    *,
    short_side: int = THUMB_SIDE,
    expect_keys: Mapping[int, str] | None = None,
) -> dict[int, bytes]:
    """{global index: thumbnail JPEG bytes} for the given samples of a shard folder.

    Args:
        shards: a shard folder or its `ShardSet` (e.g. from check_shards).
        expect_keys: the key each index must hold (e.g. the store's keys); a mismatch means
            the shards are not the store's, and nothing is returned for the wrong images.

    Raises:
        ShardsUnavailable: a sample's key differs from `expect_keys`.
    """
    where = locate(shards, indices)
    if expect_keys is not None:
        for i, loc in where.items():
            if expect_keys.get(i) not in (None, loc.key):
                raise ShardsUnavailable(
                    f"sample {i} is {loc.key!r}, the store has {expect_keys[i]!r}"
                )
    thumbs, mapped = {}, {}
    for i, loc in sorted(where.items(), key=lambda item: (str(item[1].tar), item[1].offset)):
        data = mapped.get(loc.tar)
        if data is None:
            data = mapped[loc.tar] = tar_bytes(loc.tar)  # read-only mmap: pages read on demand
        try:
            thumbs[i] = thumbnail(data[loc.offset : loc.offset + loc.size].tobytes(), short_side)
        except (OSError, ValueError) as err:  # shards hold repaired JPEGs; be safe anyway
            log.warning("thumbnail of %s (%s) failed: %s", loc.key, loc.tar.name, err)
    return thumbs


def data_uri(jpeg: bytes) -> str:
    """A `data:` URI embedding JPEG bytes, for an <img src> that needs no file or server."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
