"""Generate a small, deterministic image dataset shaped like the real job.

    info = make_sample_dataset(Path("work/sample"), n_classes=20, seed=0)

writes
    root/train/<class>/<file>   class folders "0000", "0001", ... with a long tail of counts,
                                real JPEG/PNG files whose content depends on the class
                                (colour, shape, texture) with per-image jitter, web-like sizes;
                                plus a handful of every broken or odd kind (`ODD_KINDS`)
    root/train_truth.csv        `relpath, true class` for every generated training image
                                (differs from the folder for the `noise` fraction)
    root/test/<file>            flat, class-balanced, names that do not reveal the class
    root/test_labels.csv        `name.jpg, 0042` per test image (training never reads it)
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("ellipse", "rectangle", "triangle", "cross")
TEXTURES = ("plain", "stripes", "dots", "grid")


@dataclass
class SampleDataset:
    """Where the generated files are and what they are."""

    root: Path
    classes: list[str]
    train_counts: dict[str, int]  # files per class folder, odd files included
    odd_files: dict[str, str] = field(default_factory=dict)  # train relpath -> kind
    noisy: dict[str, str] = field(default_factory=dict)  # relpath -> true class (mislabeled)
    test_labels: dict[str, str] = field(default_factory=dict)  # test name -> class

    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def test_dir(self) -> Path:
        return self.root / "test"


def make_sample_dataset(
    root: Path,
    n_classes: int = 10,
    max_per_class: int = 30,
    min_per_class: int = 3,
    noise: float = 0.0,
    n_test: int = 50,
    seed: int = 0,
    size_range: tuple[int, int] = (200, 640),
    odd_files: bool = True,
) -> SampleDataset:
    """Write the dataset under `root` (see the module docstring); same seed, same bytes.

    Args:
        n_classes: class folders; counts fall geometrically from `max_per_class` to
            `min_per_class` (a long tail).
        noise: fraction of training images written into a wrong class folder.
        n_test: test images, spread evenly over the classes.
        size_range: min and max of an image side in pixels.
        odd_files: add one file of every kind in `ODD_KINDS` to the training folders, and a
            truncated JPEG, a PNG with alpha and an empty file to the test folder.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    classes = [f"{i:04d}" for i in range(n_classes)]
    styles = [_class_style(i) for i in range(n_classes)]
    counts = np.geomspace(max_per_class, min_per_class, n_classes).round().astype(int)
    info = SampleDataset(root, classes, {c: 0 for c in classes})
    truth_rows = []
    for k, count in enumerate(counts):
        for j in range(count):
            given = k
            if noise > 0 and n_classes > 1 and rng.random() < noise:
                given = (k + int(rng.integers(1, n_classes))) % n_classes
            relpath = f"{classes[given]}/{classes[k]}_{j:04d}.jpg"
            _save(root / "train" / relpath, _draw(styles[k], rng, size_range), "JPEG", rng)
            info.train_counts[classes[given]] += 1
            truth_rows.append(f"{relpath}, {classes[k]}")
            if given != k:
                info.noisy[relpath] = classes[k]
    if odd_files:
        _write_odd_files(root / "train", classes, styles, rng, size_range, info)
    (root / "train_truth.csv").write_text("\n".join(sorted(truth_rows)) + "\n", encoding="utf-8")
    _write_test(root, classes, styles, n_test, rng, size_range, odd_files, info)
    return info


def _class_style(k: int) -> dict:
    """Colour, shape and texture that make class k recognisable (distinct for k < 256)."""
    hue = (k * 0.61803398875) % 1.0
    fg = tuple(int(255 * (0.5 + 0.5 * np.cos(2 * np.pi * (hue + s / 3)))) for s in range(3))
    return {"fg": fg, "shape": SHAPES[k % 4], "texture": TEXTURES[(k // 4) % 4], "k": k}


def _draw(style: dict, rng: np.random.Generator, size_range: tuple[int, int]) -> Image.Image:
    """One image of a class: textured background, the class shape, jitter and noise."""
    w, h = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, 2))
    bg = tuple(int(v) for v in rng.integers(60, 200, 3))
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    step = 8 + style["k"] % 5 * 4
    if style["texture"] == "stripes":
        for x in range(0, w, step * 2):
            d.rectangle((x, 0, x + step - 1, h), fill=tuple(c // 2 for c in bg))
    elif style["texture"] == "dots":
        for x in range(0, w, step * 2):
            for y in range(0, h, step * 2):
                d.ellipse((x, y, x + step // 2, y + step // 2), fill=tuple(c // 2 for c in bg))
    elif style["texture"] == "grid":
        for x in range(0, max(w, h), step * 2):
            d.line((x, 0, x, h), fill=(255, 255, 255))
            d.line((0, x, w, x), fill=(255, 255, 255))
    s = min(w, h) * rng.uniform(0.35, 0.6)
    cx, cy = w / 2 + rng.uniform(-0.2, 0.2) * w, h / 2 + rng.uniform(-0.2, 0.2) * h
    box = (cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2)
    fg = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in style["fg"])
    if style["shape"] == "ellipse":
        d.ellipse(box, fill=fg)
    elif style["shape"] == "rectangle":
        d.rectangle(box, fill=fg)
    elif style["shape"] == "triangle":
        d.polygon([(cx, box[1]), (box[0], box[3]), (box[2], box[3])], fill=fg)
    else:
        t = s / 6
        d.rectangle((box[0], cy - t, box[2], cy + t), fill=fg)
        d.rectangle((cx - t, box[1], cx + t, box[3]), fill=fg)
    return img


def _save(path: Path, img: Image.Image, fmt: str, rng: np.random.Generator, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "JPEG":
        kw.setdefault("quality", int(rng.integers(75, 96)))
    img.save(path, fmt, **kw)


def _jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


# kind -> what `engine shard` does with it (tests check these outcomes).
ODD_KINDS = {
    "truncated_jpeg": "repaired",
    "corrupt_bytes": "rejected",
    "empty_file": "rejected",
    "html_as_jpg": "rejected",
    "text_file": "rejected",
    "png_alpha": "converted",
    "palette_gif": "converted",
    "webp": "converted",
    "bmp": "converted",
    "tiff": "converted",
    "png_16bit": "converted",
    "cmyk_jpeg": "converted",
    "grayscale_jpeg": "converted",
    "exif_rotated_jpeg": "converted",
    "progressive_jpeg": "stored",
    "name_with_dots": "stored",
    "name_with_spaces": "stored",
    "unicode_name": "stored",
    "upper_case_ext": "stored",
    "jpeg_ext_upper": "stored",
}


def _odd_file(kind: str, img: Image.Image, rng: np.random.Generator) -> tuple[str, bytes]:
    """(file name, bytes) of one odd file showing `img` (when it is an image at all)."""
    buf = io.BytesIO()
    if kind == "truncated_jpeg":
        data = _jpeg_bytes(img)
        return "truncated.jpg", data[: len(data) * 6 // 10]
    if kind == "corrupt_bytes":
        return "corrupt.jpg", rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    if kind == "empty_file":
        return "empty.jpg", b""
    if kind == "html_as_jpg":
        return "page.jpg", b"<!DOCTYPE html><html><body>403 Forbidden</body></html>\n"
    if kind == "text_file":
        return "notes.txt", b"not an image\n"
    if kind == "png_alpha":
        rgba = img.convert("RGBA")
        rgba.putalpha(Image.linear_gradient("L").resize(img.size))
        rgba.save(buf, "PNG")
        return "alpha.png", buf.getvalue()
    if kind in ("palette_gif", "webp", "bmp", "tiff"):
        fmt, ext = {"palette_gif": ("GIF", "gif"), "webp": ("WEBP", "webp"),
                    "bmp": ("BMP", "bmp"), "tiff": ("TIFF", "tif")}[kind]  # fmt: skip
        (img.convert("P") if fmt == "GIF" else img).save(buf, fmt)
        return f"{kind}.{ext}", buf.getvalue()
    if kind == "png_16bit":
        gray = (np.asarray(img.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        Image.fromarray(gray).save(buf, "PNG")  # mode I;16
        return "deep16.png", buf.getvalue()
    if kind == "cmyk_jpeg":
        return "cmyk.jpg", _jpeg_bytes(img.convert("CMYK"))
    if kind == "grayscale_jpeg":
        return "gray.jpg", _jpeg_bytes(img.convert("L"))
    if kind == "exif_rotated_jpeg":
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display
        return "rotated.jpg", _jpeg_bytes(img, exif=exif.tobytes())
    if kind == "progressive_jpeg":
        return "progressive.jpg", _jpeg_bytes(img, progressive=True)
    names = {"name_with_dots": "img.v2.final.jpg", "name_with_spaces": "my photo (1).jpg",
             "unicode_name": "flör_ü_日本.jpg", "upper_case_ext": "IMG_0001.JPG",
             "jpeg_ext_upper": "photo.JPEG"}  # fmt: skip
    return names[kind], _jpeg_bytes(img)


def _write_odd_files(train, classes, styles, rng, size_range, info: SampleDataset) -> None:
    for i, kind in enumerate(ODD_KINDS):
        k = i % len(classes)
        name, data = _odd_file(kind, _draw(styles[k], rng, size_range), rng)
        path = train / classes[k] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        info.odd_files[f"{classes[k]}/{name}"] = kind
        info.train_counts[classes[k]] += 1


def _write_test(root, classes, styles, n_test, rng, size_range, odd_files, info) -> None:
    test = root / "test"
    test.mkdir(parents=True, exist_ok=True)
    truth = [i % len(classes) for i in range(n_test)]
    order = rng.permutation(n_test)
    for i, t in enumerate(order):
        name = f"{i:05d}.jpg"
        img = _draw(styles[truth[t]], rng, size_range)
        if odd_files and i < 3:  # one truncated, one PNG-with-alpha, one empty file
            kind = ("truncated_jpeg", "png_alpha", "empty_file")[i]
            (test / name).write_bytes(_odd_file(kind, img, rng)[1])
        else:
            _save(test / name, img, "JPEG", rng)
        info.test_labels[name] = classes[truth[t]]
    rows = [f"{name}, {label}" for name, label in sorted(info.test_labels.items())]
    (root / "test_labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
