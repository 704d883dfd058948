"""Small JPEG thumbnails of chosen samples, read straight from packed shards.

    thumbs = read_thumbnails(Path("work/shards/train"), [3, 17, 4051], short_side=128)
    thumbs[17]          # JPEG bytes, short side 128 px (smaller images are not enlarged)
    data_uri(thumbs[17])  # "data:image/jpeg;base64,..." for a self-contained HTML page

Only the samples asked for are read: a shard's DALI `.idx` names the byte offset and size of
each sample's `jpg` member, so an image costs one seek and one read, never a walk through the
tar. Pillow's `draft` then decodes the JPEG at 1/2, 1/4 or 1/8 scale inside the DCT (the
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
from shards.index import split_name
from shards.manifest import load_manifest

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


def check_shards(shard_dir: Path, *, fingerprint: str | None = None, num_samples=None) -> dict:
    """The shards' manifest when they are the ones a store was made from.

    Raises:
        ShardsUnavailable: no shards at `shard_dir`, or their fingerprint or sample count
            differ from what the store recorded (the message says which).
    """
    shard_dir = Path(shard_dir)
    if not (shard_dir / "manifest.json").is_file():
        raise ShardsUnavailable(f"no shards at {shard_dir} (no manifest.json)")
    try:
        manifest = load_manifest(shard_dir)
    except (UserError, OSError, ValueError, KeyError) as err:  # no usable manifest
        raise ShardsUnavailable(f"{shard_dir}: {err}") from err
    if fingerprint and manifest.get("fingerprint") not in (None, fingerprint):
        raise ShardsUnavailable(
            f"{shard_dir} holds shards {manifest.get('fingerprint')}, the store was made from "
            f"{fingerprint}"
        )
    if num_samples is not None and int(manifest["num_samples"]) != int(num_samples):
        raise ShardsUnavailable(
            f"{shard_dir} holds {manifest['num_samples']} samples, the store {num_samples}"
        )
    return manifest


def _jpg_entry(line: str, tar: Path) -> Location:
    """The `jpg` member of one `.idx` line (`<ext> <offset> <size> <name>` per member)."""
    parts = line.split()
    for i in range(0, len(parts) - 3, 4):
        ext, offset, size, name = parts[i : i + 4]
        if ext == "jpg":
            return Location(tar, int(offset), int(size), split_name(name)[0])
    raise ShardsUnavailable(f"{tar}: index line without a jpg member: {line[:80]!r}")


def locate(shard_dir: Path, indices: Iterable[int], manifest: dict | None = None):
    """{global index: Location} for the given samples, reading only the shards' `.idx` they
    fall in (store order: shards in manifest order, samples in tar order)."""
    shard_dir = Path(shard_dir)
    manifest = manifest or load_manifest(shard_dir)
    starts, offset = [], 0
    for shard in manifest["shards"]:
        starts.append(offset)
        offset += int(shard["count"])
    wanted: dict[int, list[int]] = {}
    for i in sorted(set(int(i) for i in indices)):
        if not 0 <= i < offset:
            raise IndexError(f"sample {i} is outside the {offset} samples of {shard_dir}")
        s = bisect.bisect_right(starts, i) - 1
        wanted.setdefault(s, []).append(i)
    found = {}
    for s, members in wanted.items():
        shard = manifest["shards"][s]
        tar = shard_dir / shard["name"]
        lines = (shard_dir / shard["index"]).read_text(encoding="utf-8").splitlines()[1:]
        for i in members:
            found[i] = _jpg_entry(lines[i - starts[s]], tar)
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
    shard_dir: Path,
    indices: Iterable[int],
    *,
    short_side: int = THUMB_SIDE,
    expect_keys: Mapping[int, str] | None = None,
    manifest: dict | None = None,
) -> dict[int, bytes]:
    """{global index: thumbnail JPEG bytes} for the given samples of a shard folder.

    Args:
        expect_keys: the key each index must hold (e.g. the store's keys); a mismatch means
            the shards are not the store's, and nothing is returned for the wrong images.
        manifest: the folder's manifest when already loaded (check_shards).

    Raises:
        ShardsUnavailable: a sample's key differs from `expect_keys`.
    """
    where = locate(shard_dir, indices, manifest)
    thumbs = {}
    by_position = sorted(where.items(), key=lambda item: (str(item[1].tar), item[1].offset))
    handles: dict[Path, object] = {}
    try:
        for i, loc in by_position:
            if expect_keys is not None and expect_keys.get(i) not in (None, loc.key):
                raise ShardsUnavailable(
                    f"sample {i} of {shard_dir} is {loc.key!r}, the store has {expect_keys[i]!r}"
                )
            f = handles.get(loc.tar) or handles.setdefault(loc.tar, open(loc.tar, "rb"))  # noqa: SIM115
            f.seek(loc.offset)
            try:
                thumbs[i] = thumbnail(f.read(loc.size), short_side)
            except (OSError, ValueError) as err:  # shards hold repaired JPEGs; be safe anyway
                log.warning("thumbnail of %s (%s) failed: %s", loc.key, loc.tar.name, err)
    finally:
        for f in handles.values():
            f.close()
    return thumbs


def data_uri(jpeg: bytes) -> str:
    """A `data:` URI embedding JPEG bytes, for an <img src> that needs no file or server."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
