"""Decode throughput per backend, next to the plain baseline a user would otherwise write.

Baseline: webdataset + Pillow in a torch DataLoader with the same number of workers,
preprocessed by open_clip's own ViT-B-32 eval transform. Setup (shard writing, pipeline
construction) is outside the timer; the first pass is a warm-up; the figure is the median
of `repeats` timed passes.

Usage:
    python -m bench.decode_bench                      # generated web-sized JPEGs
    python -m bench.decode_bench --shards work/shards/train --workers 8
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from engine.errors import UserError
from shards.config import ShardConfig
from shards.decode import default_workers, make_loader, resolve_backend
from shards.writer import pack

DEFAULT_BACKENDS = ("dali-gpu", "dali-cpu", "pil")


def _web_jpeg(rng: np.random.Generator) -> bytes:
    """A ~500x375 photo-like JPEG (what `engine shard` leaves after its 512 px downscale)."""
    w, h = (int(rng.integers(480, 640)), int(rng.integers(340, 480)))
    if rng.uniform() < 0.3:
        w, h = h, w
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h) + rng.uniform(0, 128)], -1)
    pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_bench_shards(out: Path, n_images: int, seed: int = 0) -> Path:
    """Pack `n_images` generated JPEGs with `engine shard`'s writer (no downscale needed)."""

    rng = np.random.default_rng(seed)
    src = out / "images"
    src.mkdir(parents=True)
    for i in range(n_images):
        (src / f"{i:06d}.jpg").write_bytes(_web_jpeg(rng))
    # Several shards so the webdataset baseline can give every worker its own.
    shard_size = max(1, -(-n_images // 16))
    pack(src, out / "shards", ShardConfig(shard_size=shard_size, short_side=None, labeled=False))
    return out / "shards"


def _time_passes(make_iter, repeats: int) -> tuple[float, int]:
    """Median seconds of a full pass after one warm-up pass; also the sample count."""
    times, count = [], 0
    for r in range(repeats + 1):
        start = time.perf_counter()
        count = 0
        for images in make_iter():
            count += images.shape[-4]
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if r:
            times.append(time.perf_counter() - start)
    return statistics.median(times), count


def baseline_iter(shard_dir: Path, batch_size: int, workers: int):
    """webdataset + Pillow DataLoader + open_clip's preprocess: the plain way."""

    preprocess = image_transform_v2(PreprocessCfg(), is_train=False)  # ViT-B-32's eval transform
    urls = sorted(str(p) for p in Path(shard_dir).glob("shard-*.tar"))
    dataset = (
        wds.WebDataset(urls, shardshuffle=False, empty_check=False)
        .decode("pilrgb")
        .to_tuple("jpg")
        .map_tuple(preprocess)
        .batched(batch_size)
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    return lambda: (images for (images,) in loader)


def run(
    shard_dir=None,
    n_images: int = 1000,
    backends=DEFAULT_BACKENDS,
    batch_size: int = 64,
    workers: int | None = None,
    repeats: int = 3,
) -> list[dict]:
    """Images/s of each available backend and of the baseline, measured in one run.

    Backends this machine cannot run (no GPU, no DALI) are reported as skipped.
    """

    workers = default_workers() if workers is None else workers
    with tempfile.TemporaryDirectory() as tmp:
        if shard_dir is None:
            shard_dir = make_bench_shards(Path(tmp), n_images)
        rows = []
        seconds, count = _time_passes(baseline_iter(shard_dir, batch_size, workers), repeats)
        rows.append(
            _row("baseline (webdataset+PIL+open_clip)", seconds, count, batch_size, workers)
        )
        for backend in backends:
            try:
                resolve_backend(backend)
            except UserError as err:
                rows.append({"backend": backend, "skipped": str(err)})
                continue
            loader = make_loader(shard_dir, backend=backend, batch_size=batch_size, workers=workers)
            seconds, count = _time_passes(lambda ld=loader: (b.images for b in ld), repeats)
            rows.append(_row(backend, seconds, count, batch_size, workers))
    base = rows[0]["images_per_s"]
    for row in rows:
        if "images_per_s" in row:
            row["vs_baseline"] = round(row["images_per_s"] / base, 2)
    return rows


def _row(backend: str, seconds: float, count: int, batch_size: int, workers: int) -> dict:
    return {
        "backend": backend,
        "images": count,
        "batch_size": batch_size,
        "workers": workers,
        "seconds": round(seconds, 3),
        "images_per_s": round(count / seconds, 1),
    }


def format_table(rows: list[dict]) -> str:
    lines = [f"{'backend':<38} {'images':>7} {'img/s':>9} {'vs baseline':>12}"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['backend']:<38} skipped: {r['skipped']}")
        else:
            lines.append(
                f"{r['backend']:<38} {r['images']:>7} {r['images_per_s']:>9.1f} {r['vs_baseline']:>11.2f}x"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, default=None, help="engine shard folder")
    parser.add_argument("--n-images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS))
    args = parser.parse_args()
    rows = run(
        args.shards,
        n_images=args.n_images,
        backends=tuple(args.backends.split(",")),
        batch_size=args.batch_size,
        workers=args.workers,
        repeats=args.repeats,
    )
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU only"
    print(
        f"decode throughput ({device}, {rows[0]['workers']} workers, batch {rows[0]['batch_size']})"
    )
    print(format_table(rows))


if __name__ == "__main__":
    main()
