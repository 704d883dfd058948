"""shards.repair and shards.keys: what happens to every odd or broken kind of file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shards.keys import make_key
from shards.repair import jpeg_process, prepare_bytes, prepare_image
from shards.sample_data import ODD_KINDS, make_sample_dataset

RNG_SEED = 0


def _picture(w: int = 120, h: int = 80) -> Image.Image:
    """A picture whose left and right halves differ, so rotations are visible."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (200, 40, 40)
    a[:, w // 2 :] = (40, 40, 200)
    return Image.fromarray(a)


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _outcome(p) -> str:
    if not p.accepted:
        return "rejected"
    if p.repaired:
        return "repaired"
    return "converted" if p.converted else "stored"


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory) -> dict[str, bytes]:
    """kind -> bytes of the odd files a generated sample dataset holds (its public record)."""
    ds = make_sample_dataset(tmp_path_factory.mktemp("odd"), n_classes=2, max_per_class=1,
                             min_per_class=1, n_test=0, size_range=(64, 96))  # fmt: skip
    return {kind: (ds.train_dir / rel).read_bytes() for rel, kind in ds.odd_files.items()}


@pytest.mark.parametrize("kind", sorted(ODD_KINDS))
def test_every_odd_kind_gets_its_documented_outcome(kind, odd_files):
    data = odd_files[kind]
    prepared = prepare_bytes(data, short_side=None)
    assert _outcome(prepared) == ODD_KINDS[kind], prepared.reason
    if prepared.accepted:
        stored = Image.open(io.BytesIO(prepared.jpeg))
        assert (stored.format, stored.mode) == ("JPEG", "RGB")
        assert jpeg_process(prepared.jpeg) in ((0, 8), (1, 8), (2, 8))
    if ODD_KINDS[kind] == "stored":
        assert prepared.jpeg == data  # byte for byte
        assert prepared.reason == ""
    else:
        assert prepared.reason  # every repair, conversion and rejection says why


def test_rejection_reasons_name_the_problem():
    assert prepare_bytes(b"").reason == "empty file"
    html = prepare_bytes(b"<!DOCTYPE html><html></html>")
    assert html.reason.startswith("not an image Pillow can identify (starts with b'<!DOCTYPE")
    assert prepare_bytes(b"\xff\xd8\xff").accepted is False  # a JPEG that stops in its header


def test_truncated_jpeg_is_repaired_keeping_the_readable_part():
    data = _jpeg(_picture(240, 160))
    prepared = prepare_bytes(data[: len(data) * 7 // 10])
    assert prepared.repaired and not prepared.converted
    assert prepared.reason.startswith("truncated or corrupt jpeg: image file is truncated")
    top = _decode(prepared.jpeg)[:20].astype(int)  # the first rows survived the cut
    assert np.abs(top - np.asarray(_picture(240, 160))[:20]).mean() < 3


def test_exif_orientation_is_baked_into_pixels():
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    prepared = prepare_bytes(_jpeg(_picture(120, 80), exif=exif.tobytes()))
    pixels = _decode(prepared.jpeg)
    assert pixels.shape == (120, 80, 3)  # width and height swapped
    assert Image.open(io.BytesIO(prepared.jpeg)).getexif().get(0x0112) is None
    # clockwise: the left (red) half of the stored picture is now on top
    assert pixels[10, 40, 0] > 150 and pixels[-10, 40, 2] > 150


def test_alpha_is_composited_over_white_and_palette_kept():
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 32, 64))  # left half fully transparent (black under it)
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    pixels = _decode(prepare_bytes(buf.getvalue()).jpeg).astype(int)
    assert np.abs(pixels[32, 8] - 255).max() <= 3  # white, not the hidden black
    assert np.abs(pixels[32, 56] - (255, 0, 0)).max() <= 3


def test_16bit_png_is_scaled_not_clipped():
    gray16 = np.full((32, 32), 128 * 257, np.uint16)
    buf = io.BytesIO()
    Image.fromarray(gray16).save(buf, "PNG")
    pixels = _decode(prepare_bytes(buf.getvalue()).jpeg).astype(int)
    assert np.abs(pixels - 128).max() <= 1


def test_cmyk_and_grayscale_jpegs_become_rgb_with_the_same_look():
    picture = np.asarray(_picture()).astype(int)
    for mode in ("CMYK", "L"):
        prepared = prepare_bytes(_jpeg(_picture().convert(mode)))
        assert prepared.converted and prepared.reason == f"{mode} JPEG -> RGB JPEG"
        pixels = _decode(prepared.jpeg).astype(int)
        reference = np.asarray(_picture().convert(mode).convert("RGB")).astype(int)
        assert np.abs(pixels - reference).mean() < 3
    assert (
        np.abs(_decode(prepare_bytes(_jpeg(_picture().convert("CMYK"))).jpeg) - picture).mean() < 5
    )


def test_short_side_downscale_exact_size_and_small_images_untouched():
    big = _jpeg(_picture(1000, 600))
    prepared = prepare_bytes(big, short_side=300)
    assert prepared.resized and not prepared.converted and prepared.size == (500, 300)
    assert _decode(prepared.jpeg).shape == (300, 500, 3)
    small = _jpeg(_picture(400, 300))
    assert prepare_bytes(small, short_side=300).jpeg == small  # short side == S: stored as is


def test_prepare_image_reads_files_and_reports_unreadable_paths(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(_jpeg(_picture()))
    assert prepare_image(path).jpeg == path.read_bytes()
    missing = prepare_image(tmp_path / "missing.jpg")
    assert not missing.accepted and missing.reason.startswith("cannot read file")


NAMES = [
    "0001/img.v2.jpg",
    "0001/img_v2_jpg",
    "0001/img v2.jpg",
    "0001/IMG.JPG",
    "0001/img.jpg",
    "0001/flör ü 日本.jpeg",
    "0001/a/b.jpg",
    "0001/a_b.jpg",
    "." * 3,
]


def test_keys_are_unique_dot_free_and_stable():
    keys = [make_key(n) for n in NAMES]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert key.isascii() and "." not in key and " " not in key and "/" not in key
        assert len(key) + len(".json") <= 100  # ustar name field
    assert make_key("0001/img.v2.jpg") == make_key("0001/img.v2.jpg")
    assert make_key("0001/img.v2.jpg").startswith("0001_img_v2_jpg-")
    assert len(make_key("x" * 500)) <= 93
