"""Throughput of `engine shard`: packing, the truncation check, and later decode cost.

    python -m bench.shard_bench            # 2,000 web-sized JPEGs + 20 large photos

Generated input: `n_images` JPEGs of ~500x375 (web size, noisy content so the files have
realistic entropy) plus `large` 3000x2000 (6 MP) photos. For each `--short-side` setting it
reports packing images/s, then the decode cost every later pass pays for what was stored
(Pillow full decode of the stored JPEGs), and the cost of the truncation check alone,
with and without DCT scaling (`draft`).
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from shards.config import ShardConfig
from shards.reader import iter_samples
from shards.repair import _truncation_error
from shards.writer import pack

log = logging.getLogger(__name__)


def make_jpegs(root: Path, n_images: int, large: int, seed: int = 0) -> list[Path]:
    """Write the benchmark's input JPEGs under root/<class>/ (4 class folders)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n_images + large):
        w, h = (
            (3000, 2000)
            if i >= n_images
            else (int(rng.integers(450, 560)), int(rng.integers(340, 420)))
        )
        small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
        path = root / f"{i % 4:04d}" / f"img_{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, "JPEG", quality=85)
        paths.append(path)
    return paths


def _per_second(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else float("inf")


def time_truncation_check(paths: list[Path]) -> dict:
    """Images/s of the full-decode truncation check, with and without DCT scaling."""
    datas = [p.read_bytes() for p in paths]
    start = time.perf_counter()
    for data in datas:
        assert _truncation_error(data) is None
    draft_s = time.perf_counter() - start
    start = time.perf_counter()
    for data in datas:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    full_s = time.perf_counter() - start
    return {"check_draft_img_s": _per_second(len(datas), draft_s),
            "check_full_img_s": _per_second(len(datas), full_s)}  # fmt: skip


def time_decode(shard_dir: Path) -> dict:
    """Images/s of a Pillow full decode of every stored JPEG (what each later pass pays)."""
    jpegs = [s.jpeg for s in iter_samples(shard_dir)]
    start = time.perf_counter()
    for jpeg in jpegs:
        with Image.open(io.BytesIO(jpeg)) as img:
            img.convert("RGB")
    return {"decode_img_s": _per_second(len(jpegs), time.perf_counter() - start),
            "stored_mb": round(sum(map(len, jpegs)) / 1e6, 1)}  # fmt: skip


def run(
    n_images: int = 2000, large: int = 20, short_sides=(None, 512, 256), workers=None
) -> list[dict]:
    """One row per short-side setting (and per input subset for the truncation check)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        paths = make_jpegs(src, n_images, large)
        web, big = paths[:n_images], paths[n_images:]
        for name, subset in (("web ~500x375", web[:500]), ("large 3000x2000", big)):
            if subset:
                rows.append(
                    {"stage": "truncation check", "input": name, **time_truncation_check(subset)}
                )
        for short_side in short_sides:
            out = Path(tmp) / f"out_{short_side}"
            cfg = ShardConfig(short_side=short_side, workers=workers)
            start = time.perf_counter()
            manifest = pack(src, out, cfg)
            seconds = time.perf_counter() - start
            rows.append({"stage": "pack", "short_side": short_side, "workers": cfg.num_workers,
                         "images": manifest["num_samples"], "pack_img_s": _per_second(len(paths), seconds),
                         "resized": manifest["resized"], **time_decode(out)})  # fmt: skip
    return rows


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    for row in run():
        print(row)
