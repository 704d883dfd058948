"""Make any image file safe for every decoder: pass valid JPEGs through, re-encode the rest.

DALI's GPU decoder fails a whole batch on one truncated JPEG and has no skip option, so
the shard writer decides here, once per file, what goes into a shard:

| input | result |
|---|---|
| valid 8-bit baseline/progressive RGB JPEG, no EXIF rotation, short side <= S | original bytes |
| the same but short side > S | downscaled (DCT-scaled decode + Lanczos), re-encoded |
| truncated or corrupt file Pillow reads with LOAD_TRUNCATED_IMAGES | re-encoded, `repaired` |
| PNG (alpha, palette), GIF, WebP, BMP, TIFF, 16-bit | RGB JPEG (alpha over white) |
| CMYK or grayscale JPEG, arithmetic/lossless/12-bit JPEG | RGB JPEG |
| JPEG with an EXIF orientation other than 1 | rotation baked into pixels, RGB JPEG |
| empty, HTML, text, anything Pillow cannot open or decode | rejected, with the reason |

Every stored JPEG is therefore 8-bit, 3-channel and upright: nvJPEG, DALI's CPU decoder and
Pillow see the same pixels (grayscale and CMYK JPEGs would come out as 1 or 4 channels, or
with inverted Adobe CMYK, depending on the decoder).

    prepared = prepare_image(Path("data/train/0001/a.jpg"), short_side=512)
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shards.sources import read_regular_file
from shards.truncated import load_truncated_images

# Formats whose bytes can be stored as they are (MPO = a camera JPEG with extra frames
# appended; every decoder reads its first frame).
JPEG_FORMATS = ("jpeg", "mpo")
# SOF0 baseline, SOF1 extended sequential, SOF2 progressive (all Huffman): what nvJPEG,
# libjpeg-turbo and Pillow all decode. Arithmetic (SOF9+) and lossless (SOF3) are not safe.
SAFE_JPEG_PROCESSES = (0, 1, 2)
# Errors Pillow raises for files it cannot identify or decode.
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)


@dataclass(frozen=True)
class Prepared:
    """What to store for one source file.

    Attributes:
        jpeg: JPEG bytes to store; None when the file is rejected.
        source_format: Pillow's format name in lower case ("jpeg", "png", ...), or "unknown".
        repaired: the file was truncated or corrupt and was re-encoded from what was readable.
        converted: re-encoded for another reason than size (format, mode, rotation, coding).
        resized: downscaled to the configured short side.
        reason: why the file was re-encoded or rejected ("" when stored as is).
        size: (width, height) of the stored image; (0, 0) when rejected.
    """

    jpeg: bytes | None
    source_format: str
    repaired: bool = False
    converted: bool = False
    resized: bool = False
    reason: str = ""
    size: tuple[int, int] = (0, 0)

    @property
    def accepted(self) -> bool:
        return self.jpeg is not None


def prepare_image(path: Path, short_side: int | None = None, quality: int = 95) -> Prepared:
    """Read `path` and decide what to store for it (see the module table)."""
    try:
        data = read_regular_file(Path(path))  # never a FIFO or device; size capped
    except OSError as err:
        return Prepared(None, "unknown", reason=f"cannot read file: {err.strerror or err}")
    return prepare_bytes(data, short_side, quality)


def prepare_bytes(data: bytes, short_side: int | None = None, quality: int = 95) -> Prepared:
    """Same as `prepare_image`, from the file's bytes."""
    with warnings.catch_warnings():
        # Pillow warns on stderr about images above MAX_IMAGE_PIXELS (a decompression-bomb
        # guard): such a file's reason says so instead (`_bomb_reason`), in the manifest.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _prepare(data, short_side, quality)


def _prepare(data: bytes, short_side: int | None, quality: int) -> Prepared:
    if not data:
        return Prepared(None, "unknown", reason="empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = (img.format or "unknown").lower()
            size = img.size
            reasons = _conversion_reasons(data, img, fmt) + _bomb_reason(size)
    except Image.DecompressionBombError as err:
        return Prepared(None, "unknown", reason=f"image too large: {err}")
    except UnidentifiedImageError:
        return Prepared(None, "unknown", reason=f"not an image Pillow can identify ({_head(data)})")
    except DECODE_ERRORS as err:
        return Prepared(None, "unknown", reason=_describe(err))
    needs_resize = short_side is not None and min(size) > short_side
    if not reasons and not needs_resize and _truncation_error(data) is None:
        return Prepared(data, fmt, size=size)
    return _reencode(data, fmt, reasons, short_side, quality)


def _conversion_reasons(data: bytes, img: Image.Image, fmt: str) -> list[str]:
    """Why this image cannot be stored as it is (besides truncation and size)."""
    if fmt not in JPEG_FORMATS:
        return [f"{fmt} {img.mode} -> RGB JPEG"]
    reasons = []
    process, precision = jpeg_process(data)
    if process not in SAFE_JPEG_PROCESSES or precision != 8:
        reasons.append(f"JPEG SOF{process} {precision}-bit -> baseline JPEG")
    if img.mode != "RGB":
        reasons.append(f"{img.mode} JPEG -> RGB JPEG")
    orientation = img.getexif().get(0x0112, 1)
    if orientation not in (1, None):
        reasons.append(f"EXIF orientation {orientation} baked into pixels")
    return reasons


def _bomb_reason(size: tuple[int, int]) -> list[str]:
    """A reason for an image above Pillow's decompression-bomb warning limit (it is re-encoded
    and named rather than warned about); twice the limit is an error, so rejected."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None or size[0] * size[1] <= limit:
        return []
    return [f"large image {size[0]}x{size[1]} (over Pillow's {limit} pixel warning limit)"]


def jpeg_process(data: bytes) -> tuple[int | None, int | None]:
    """(SOF number, sample precision) of a JPEG stream, or (None, None) if no SOF is found."""
    i = 2
    while i + 4 < len(data):
        if data[i] != 0xFF:
            return None, None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD8 or marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return marker - 0xC0, data[i + 4]
        if marker == 0xDA:  # scan data before any SOF
            return None, None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None, None


def _truncation_error(data: bytes) -> str | None:
    """Entropy-decode the whole JPEG, cheaply, and say why it is broken (None if it is not).

    libjpeg must walk every Huffman-coded block to reach the end of the stream, but with
    DCT scaling (Pillow's `draft`, 1/8 size, luma only) it skips almost all IDCT, upsampling
    and colour work: ~5x cheaper than a full decode (bench/shard_bench.py measures it).
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("L", (1, 1))
            img.load()
    except DECODE_ERRORS as err:
        return _describe(err)
    return None


def _reencode(
    data: bytes, fmt: str, reasons: list[str], short_side: int | None, quality: int
) -> Prepared:
    """Decode (tolerating truncation), fix orientation/mode/size, encode a baseline JPEG."""
    converted = bool(reasons)
    repaired = False
    try:
        img = _decode(data, short_side, tolerant=False)
    except DECODE_ERRORS as strict_err:
        try:
            img = _decode(data, short_side, tolerant=True)
        except DECODE_ERRORS as err:
            return Prepared(None, fmt, reason=f"unreadable {fmt}: {_describe(err)}")
        repaired = True
        reasons = [f"truncated or corrupt {fmt}: {_describe(strict_err)}", *reasons]
    resized = short_side is not None and min(img.size) > short_side
    if resized:
        img = _resize_short_side(img, short_side)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Prepared(
        buf.getvalue(),
        fmt,
        repaired=repaired,
        converted=converted,
        resized=resized,
        reason="; ".join(reasons) if reasons else f"downscaled to short side {short_side}",
        size=img.size,
    )


def _decode(data: bytes, short_side: int | None, tolerant: bool) -> Image.Image:
    """Upright RGB pixels; JPEGs larger than needed are decoded at a DCT-scaled size."""
    with load_truncated_images(tolerant), Image.open(io.BytesIO(data)) as img:
        if short_side is not None and img.format and img.format.lower() in JPEG_FORMATS:
            scale = short_side / min(img.size)
            if scale < 1:  # draft keeps the image >= the requested size
                img.draft(img.mode, (int(img.width * scale) + 1, int(img.height * scale) + 1))
        img.load()
        upright = ImageOps.exif_transpose(img)
        return to_rgb(upright)


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB: transparency composited over white, 16/32-bit and float scaled to 0..255."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return Image.fromarray(_to_uint8(np.asarray(img)), "L").convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale a high-bit-depth single-channel image to uint8 (16-bit: divide by 257)."""
    values = values.astype(np.float64)
    if values.max(initial=0) > 255:
        values = values / 257.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _resize_short_side(img: Image.Image, short_side: int) -> Image.Image:
    """Resize so that min(width, height) == short_side, keeping the aspect ratio."""
    scale = short_side / min(img.size)
    width = max(short_side, round(img.width * scale)) if img.width >= img.height else short_side
    height = short_side if img.width >= img.height else max(short_side, round(img.height * scale))
    return img.resize((width, height), Image.Resampling.LANCZOS)


def _head(data: bytes) -> str:
    """The first bytes of a file, to tell HTML, text and garbage apart in a reason."""
    return f"starts with {data[:16]!r}, {len(data)} bytes"


def _describe(err: BaseException) -> str:
    """One-line reason for a manifest entry."""
    return str(err).splitlines()[0] if str(err) else type(err).__name__
