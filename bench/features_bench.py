"""Throughput of the frozen trunk and of the whole `engine features` pass, with baselines.

    python -m bench.features_bench                       # CPU: 32 generated images, depth 2
    python -m bench.features_bench --shards work/shards/train --n-images 8192   # on a GPU
    python -m bench.features_bench --store               # store chunking / compression

Rows (images/s, median of `repeats` after a warm-up; setup outside the timer; CUDA synced):
  trunk      the frozen trunk alone on a resident batch (bf16 autocast on GPU, fp32 on CPU),
             next to open_clip's `encode_image` on the same batch (fp16 autocast / fp32);
  features   `extract` from shards to a Zarr store (decode + trunk + view-0 tail + writes),
             next to the plain baseline a user would write: webdataset + Pillow DataLoader
             with the same workers + open_clip preprocess + `encode_image`, results to host.
The ratio is measured in the same run, on the same machine and images.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import time_call
from bench.decode_bench import baseline_iter, make_bench_shards
from features.config import FeatureConfig
from features.extract import extract
from features.model import load_clip
from features.runner import TrunkRunner
from features.split import split_visual
from features.store import FeatureStore, StoreSpec
from shards.decode import default_workers, resolve_backend
from shards.manifest import load_manifest

log = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up (DALI pipeline build, cuDNN autotune, torch.compile)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _half_autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def bench_trunk(
    clip, depth: int, batch_size: int, device: torch.device, repeats: int, compile: bool = False
) -> dict:
    """Trunk alone (the 12 - depth blocks it names, no tail) vs open_clip encode_image, on one
    resident synthetic batch; `compile` wraps the trunk in `torch.compile` (CUDA)."""

    runner = TrunkRunner(clip.model.visual, depth, device, compile=compile)
    x = torch.randn(1, batch_size, 3, 224, 224, device=device)  # (V=1, B, 3, 224, 224)
    trunk_s = time_call(lambda: runner.trunk_tokens(x), repeats=repeats, warmup=2 if compile else 1)

    def baseline():
        with torch.inference_mode(), _half_autocast(device):
            return clip.model.encode_image(x[0])

    base_s = time_call(baseline, repeats=repeats)
    precision = "bf16" if device.type == "cuda" else "fp32"
    compiled = ", compiled" if compile else ""
    return {
        "stage": "trunk",
        "backend": f"trunk {12 - depth}/12 blocks, {precision}{compiled}, batch {batch_size}",
        "images_per_s": round(batch_size / trunk_s, 1),
        "baseline": "open_clip encode_image " + ("fp16" if device.type == "cuda" else "fp32"),
        "baseline_images_per_s": round(batch_size / base_s, 1),
        "vs_baseline": round(base_s / trunk_s, 2),
    }


def bench_features(clip, shard_dir, *, depth, batch_size, workers, device, repeats) -> dict:
    """The whole feature pass from shards vs webdataset + Pillow + open_clip."""

    n = load_manifest(shard_dir)["num_samples"]
    cfg = FeatureConfig(
        depth=depth, weights="random", batch_size=batch_size, workers=workers, force=True,
        device=device.type,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.zarr"
        ours_s = _median_seconds(
            lambda: extract(shard_dir, out, cfg, clip_loader=lambda w, d: clip), repeats, device
        )
    batches = baseline_iter(shard_dir, batch_size, workers)

    def baseline():
        for images in batches():
            with torch.inference_mode(), _half_autocast(device):
                feats = clip.model.encode_image(images.to(device, non_blocking=True))
            torch.nn.functional.normalize(feats.float(), dim=-1).cpu()

    base_s = _median_seconds(baseline, repeats, device)

    return {
        "stage": "features",
        "backend": f"engine features ({resolve_backend('auto')}, depth {depth}, {workers} workers)",
        "images": n,
        "images_per_s": round(n / ours_s, 1),
        "baseline": f"webdataset+Pillow DataLoader ({workers} workers) + open_clip",
        "baseline_images_per_s": round(n / base_s, 1),
        "vs_baseline": round(base_s / ours_s, 2),
    }


def run(
    shard_dir=None,
    *,
    n_images: int = 32,
    device: str = "cpu",
    depth: int = 2,
    batch_size: int | None = None,
    workers: int | None = None,
    repeats: int = 3,
) -> list[dict]:
    """Trunk and features-pass rows, each next to its baseline (see the module docstring)."""

    dev = torch.device(device)
    batch_size = batch_size or (256 if dev.type == "cuda" else 8)
    workers = default_workers() if workers is None else workers
    clip = load_clip("random", dev)  # speed does not depend on the weights' values
    rows = [bench_trunk(clip, depth, batch_size, dev, repeats)]
    with tempfile.TemporaryDirectory() as tmp:
        if shard_dir is None:
            shard_dir = make_bench_shards(Path(tmp), n_images)
        rows.append(
            bench_features(
                clip,
                Path(shard_dir),
                depth=depth,
                batch_size=batch_size,
                workers=workers,
                device=dev,
                repeats=repeats,
            )  # fmt: skip
        )
    return rows


def run_store(
    n: int = 1024, chunk_sizes=(64, 128, 256, 512), compressors=("none", "zstd", "lz4")
) -> list[dict]:
    """Write/read speed and compression ratio of the token array per chunking and codec.

    Tokens are a random-weight ViT-B/32 trunk's output on 8 noise images, tiled to `n` rows
    with added noise of half their spread (fp16 mantissas are noise either way, which is why
    activations barely compress).
    """

    torch.manual_seed(0)
    trunk, _ = split_visual(load_clip("random").model.visual, 2)
    with torch.inference_mode():
        real = trunk(torch.randn(8, 3, 224, 224)).numpy()  # (8, 50, 768)
    rng = np.random.default_rng(0)
    tiled = np.concatenate([real] * (n // 8))
    tokens = (tiled + rng.normal(0, 0.5 * real.std(), tiled.shape)).astype(np.float16)[None]
    rows = []
    for chunk_n in chunk_sizes:
        for codec in compressors:
            rows.append(_time_store(tokens, chunk_n, codec))
    return rows


def _time_store(tokens: np.ndarray, chunk_n: int, codec: str) -> dict:

    n = tokens.shape[1]
    spec = StoreSpec(
        n=n, chunk_n=chunk_n, depth=2, views=1, classes=[], weights={"name": "random"},
        preprocess={}, compressor=codec,
    )  # fmt: skip
    embed = np.zeros((n, 512), np.float16)
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore.create(Path(tmp) / "s.zarr", spec)
        start = time.perf_counter()
        for c in range(store.num_chunks):
            r = store.chunk_rows(c)
            names = [str(i) for i in range(r.start, r.stop)]
            store.write_chunk(c, keys=names, paths=names, labels=np.zeros(len(names)),
                              embed=embed[r], tokens=tokens[:, r])  # fmt: skip
        write_s = time.perf_counter() - start
        size = sum(
            f.stat().st_size for f in (Path(tmp) / "s.zarr" / "tokens").rglob("*") if f.is_file()
        )
        start = time.perf_counter()
        back = store.tokens[0]
        read_s = time.perf_counter() - start
        assert np.array_equal(back, tokens[0])
    mb = tokens.nbytes / 1e6
    return {
        "stage": "store",
        "chunk_n": chunk_n,
        "compressor": codec,
        "ratio": round(tokens.nbytes / size, 3),
        "write_mb_s": round(mb / write_s, 1),
        "write_img_s": round(n / write_s, 1),
        "read_mb_s": round(mb / read_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, default=None, help="engine shard folder")
    parser.add_argument("--n-images", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--store", action="store_true", help="store chunking/codec table only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.store:
        rows = run_store()
    else:
        rows = run(
            args.shards, n_images=args.n_images, device=args.device, depth=args.depth,
            batch_size=args.batch_size, workers=args.workers, repeats=args.repeats,
        )  # fmt: skip
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"features bench on {device} ({torch.get_num_threads()} threads)")
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
