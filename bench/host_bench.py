"""Host side of the DALI feature pass: how fast the feeder prepares batches, no GPU needed.

The DALI path's host feeder (shards.decode.dali.prepare_batch) hands DALI each batch's JPEG
bytes and view geometry; the whole features pass can go no faster than it. Timed against the
per-sample feeder it replaced (kept below as the baseline, measured in the same run): one
`os.pread` per sample, a Pillow header parse for the size, and a freshly seeded Philox
generator per view with torchvision's rejection loop in Python.

Both are timed around batch preparation alone (batch 250, as in the feature pass) on the same
catalog, one warm-up pass, median of `repeats` passes. The new feeder's per-shard size cache is
emptied before every pass, so its metadata reads are inside the timer.

Usage:
    python -m bench.host_bench                       # generated ~500x375 JPEGs
    python -m bench.host_bench --shards work/shards/train
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from bench.store_bench import store_write_rows
from bench.suite import make_row
from shards.decode.catalog import load_catalog
from shards.decode.dali import prepare_batch
from shards.decode.preprocess import eval_params
from shards.index import write_dali_index
from shards.manifest import FORMAT, MANIFEST_NAME

log = logging.getLogger(__name__)

BATCH = 250  # the feature pass's decode batch on a GPU
N_IMAGES = 2000  # 8 batches: enough passes of the cache-clearing feeder to be steady
DISTINCT_JPEGS = 24  # generated once, then repeated: feeding never looks at the pixels


def make_host_shards(out: Path, n_images: int = N_IMAGES, shard_size: int = 500) -> Path:
    """Engine shards of `n_images` web-sized JPEGs (~500x375, a third portrait), written
    directly (the packer's per-image checks would cost more than the timing itself)."""

    rng = np.random.default_rng(0)
    jpegs = [_web_jpeg(rng) for _ in range(DISTINCT_JPEGS)]
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for s, start in enumerate(range(0, n_images, shard_size)):
        name, count = f"shard-{s:06d}", min(shard_size, n_images - start)
        with wds.TarWriter(str(out / f"{name}.tar"), mtime=0) as sink:
            for i in range(start, start + count):
                jpeg, (w, h) = jpegs[i % DISTINCT_JPEGS]
                meta = {"path": f"{i:06d}.jpg", "width": w, "height": h}
                sink.write({"__key__": f"img_{i:06d}", "jpg": jpeg, "json": json.dumps(meta)})
        write_dali_index(out / f"{name}.tar", out / f"{name}.idx")
        shards.append({"name": f"{name}.tar", "index": f"{name}.idx", "count": count})
    manifest = {"format": FORMAT, "labeled": False, "classes": [], "shard_size": shard_size,
                "shards": shards, "num_samples": n_images}  # fmt: skip
    (out / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    return out


def _web_jpeg(rng: np.random.Generator) -> tuple[bytes, tuple[int, int]]:
    w, h = int(rng.integers(480, 640)), int(rng.integers(340, 480))
    if rng.uniform() < 0.3:
        w, h = h, w
    pixels = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize((w, h), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue(), (w, h)


# ---- baseline: the per-sample host feeder as it was before the vectorised one -------------
RRC_SCALE, RRC_RATIO, FLIP_P = (0.9, 1.0), (3.0 / 4.0, 4.0 / 3.0), 0.5


def _old_rng(seed: int, index: int, view: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, index, view])))


def _old_random_resized_crop(width: int, height: int, rng) -> tuple[int, int, int, int]:
    area = width * height
    log_ratio = (math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*RRC_SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    return 0, 0, width, height  # the fallback never runs on web-sized images


def _old_sample_params(width: int, height: int, *, seed: int, index: int, views: int) -> list:

    params = [eval_params(width, height)]
    for v in range(1, views):
        rng = _old_rng(seed, index, v)
        left, top, w, h = _old_random_resized_crop(width, height, rng)
        params.append((left, top, w, h, bool(rng.uniform() < FLIP_P)))
    return params


def _old_columns(params: list[list], views: int) -> list[list[np.ndarray]]:
    columns: list[list[np.ndarray]] = [[] for _ in range(2 + 3 * views)]
    for sample in params:
        ev = sample[0]
        columns[0].append(np.float32(ev.resize[0]))
        columns[1].append(np.float32(ev.resize[1]))
        boxes = [(ev.left, ev.top, ev.width, ev.height, ev.flip), *sample[1:]]
        for v, (left, top, w, h, flip) in enumerate(boxes):
            columns[2 + 3 * v].append(np.array([top, left], np.float32))
            columns[3 + 3 * v].append(np.array([h, w], np.float32))
            columns[4 + 3 * v].append(np.int32(flip))
    return columns


def old_prepare(catalog, fds: dict, positions: range, *, seed: int, views: int) -> list:
    """The replaced `HostFeeder._prepare`: pread, header parse and a generator per sample."""
    jpegs, params = [], []
    for i in positions:
        tar = str(catalog.entries[int(catalog.shard[i])].tar)
        fd = fds.get(tar) or fds.setdefault(tar, os.open(tar, os.O_RDONLY))
        jpeg = os.pread(fd, int(catalog.sizes[i]), int(catalog.offsets[i]))
        with Image.open(io.BytesIO(jpeg)) as img:
            w, h = img.size
        index = int(catalog.indices[i])
        params.append(_old_sample_params(w, h, seed=seed, index=index, views=views))
        jpegs.append(np.frombuffer(jpeg, np.uint8))
    return [jpegs, *_old_columns(params, views)]


# ---- timing -------------------------------------------------------------------------------
def _median_rate(prepare_pass, n: int, repeats: int) -> float:
    """Images/s of the median of `repeats` timed passes, after one warm-up pass."""
    times = []
    for r in range(repeats + 1):
        start = time.perf_counter()
        prepare_pass()
        if r:
            times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def time_feeders(shard_dir: Path, views: int, repeats: int = 3, seed: int = 0) -> dict:
    """{'images', 'feed', 'old'}: images/s of the new and the old feeder on one catalog."""

    catalog = load_catalog(shard_dir)
    n = len(catalog)
    batches = [range(s, min(s + BATCH, n)) for s in range(0, n, BATCH)]

    def new_pass():
        catalog._sized.clear()  # sizes are re-read from the shard metadata in every pass
        for b in batches:
            prepare_batch(catalog, b, seed=seed, views=views)

    fds: dict = {}

    def old_pass():
        for b in batches:
            old_prepare(catalog, fds, b, seed=seed, views=views)

    try:
        feed = _median_rate(new_pass, n, repeats)
        old = _median_rate(old_pass, n, repeats)
    finally:
        for fd in fds.values():
            os.close(fd)
    return {"images": n, "views": views, "feed": feed, "old": old}


def run(shard_dir=None, *, views=(1, 2), repeats: int = 3, n_images: int = N_IMAGES) -> list:
    """One result per view count: {'views', 'images', 'feed', 'old'} in images/s."""
    with tempfile.TemporaryDirectory(prefix="engine-host-bench-") as tmp:
        if shard_dir is None:
            shard_dir = make_host_shards(Path(tmp) / "shards", n_images)
        return [time_feeders(Path(shard_dir), v, repeats) for v in views]


# Rows per store-write run: four whole 1,024-row chunks.
STORE_IMAGES = 4096
OLD_FEEDER = "per-sample feeder (pread + header parse + Philox per view)"


def host_rows(ctx) -> list[dict]:
    """Rows of `engine bench --stages host`: `feed views=1`, `feed views=2` (images/s) next to
    the old per-sample feeder measured in the same run, each noting the features-pass
    ceiling the host side allows (the slowest host rate of that view count)."""

    s = ctx.settings
    results = run(s.shards, repeats=1 if s.quick else 3, n_images=N_IMAGES // (2 if s.quick else 1))
    rows = [
        make_row("host", f"feed views={r['views']}", r["feed"], OLD_FEEDER, r["old"])
        for r in results
    ]
    with tempfile.TemporaryDirectory(prefix="engine-store-bench-") as tmp:
        # the extractor's own writer vs the old single-thread zarr path (bench.store_bench)
        store = store_write_rows(images=STORE_IMAGES // (2 if s.quick else 1), out_dir=Path(tmp))
    rows += [
        make_row("host", r["backend"], r["images_per_s"], r["baseline"],
                 r["baseline_images_per_s"], note=f"{r['gb_per_s']:.2f} GB/s of tokens")
        for r in store
    ]  # fmt: skip
    _note_ceilings(rows)
    return rows


def _note_ceilings(rows: list[dict]) -> None:
    """Write into each feed row the features-pass ceiling the host rates allow at its view
    count: no faster than its feeder, nor than the store writes when they are measured."""
    store = [r["images_per_s"] for r in rows if r["backend"].startswith("store write")]
    for row in rows:
        if not row["backend"].startswith("feed"):
            continue
        views = row["backend"].split("=")[1]
        ceiling = min([row["images_per_s"], *(x for x in store if x)])
        row["note"] = (
            f"features-pass ceiling from the host side at {views} view(s): {ceiling:,.0f} img/s"
        )
        log.info("host: %s", row["note"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for r in run(args.shards, repeats=args.repeats):
        log.warning("views=%d: feed %.0f img/s, old feeder %.0f img/s (%d images)",
                    r["views"], r["feed"], r["old"], r["images"])  # fmt: skip


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
