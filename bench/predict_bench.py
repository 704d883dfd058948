"""Speed of `engine predict`: the merged model on images, and the cached-store path.

    python -m bench.predict_bench --images 32

Rows (images/s, median of `repeats` passes after a warm-up pass):
    merged model from shards   `engine predict`'s image path: engine decode + the merged
                               ViT-B/32 + head, vs webdataset + Pillow + open_clip's
                               `encode_image` + the same head (what a user would write)
    cached store, tail k=2     prediction from cached depth-2 tokens (2 blocks + head), vs the
                               merged model on images
The model has random weights and a random head: speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.common import rate, time_call
from bench.decode_bench import baseline_iter, make_bench_shards
from features.model import load_clip
from features.store import FeatureStore
from heads.config import TrainConfig
from heads.export import DEFAULT_PREPROCESS, LoadedModel
from heads.head import make_head
from heads.predict import predict_shards
from shards.decode import default_workers
from shards.manifest import load_manifest

log = logging.getLogger(__name__)

DEPTH = 2  # the depth the demo and the recommended setting train


def make_model(clip, num_classes: int, device: str):
    """A `LoadedModel` as `heads.export.load_model` returns it, built without a disk round trip."""

    model = getattr(clip, "model", clip)
    torch.manual_seed(0)
    head = make_head("cosine", num_classes)
    torch.nn.init.normal_(head.weight)
    return LoadedModel(
        visual=model.visual.eval(),
        head=head.eval(),
        classes=[f"{k:04d}" for k in range(num_classes)],
        class_counts=[1.0] * num_classes,
        preprocess=dict(DEFAULT_PREPROCESS),
        config=TrainConfig(unfreeze_last=DEPTH),
        depth=DEPTH,
    ).to(device)


def _token_store(n: int, num_classes: int, seed: int = 0):
    """An in-memory depth-2 feature store of n samples (what `engine features` caches)."""

    rng = np.random.default_rng(seed)
    embed = rng.standard_normal((n, 512)).astype(np.float16)
    tokens = rng.standard_normal((1, n, 50, 768)).astype(np.float16)  # (V, N, 50, 768)
    labels = rng.integers(0, num_classes, n)
    classes = [f"{k:04d}" for k in range(num_classes)]
    return FeatureStore.from_arrays(
        embed=embed, labels=labels, classes=classes, tokens=tokens, depth=DEPTH
    )


def _baseline_pass(model, shard_dir: Path, batch_size: int, workers: int):
    """webdataset + Pillow DataLoader + open_clip encode_image + head over the shards."""

    images_iter = baseline_iter(shard_dir, batch_size, workers)
    device = next(model.head.parameters()).device

    def fn():
        with torch.no_grad():
            for images in images_iter():
                model.logits_from_images(images.to(device))  # (B, K)

    return fn


def run(
    shard_dir=None,
    clip=None,
    n_images: int = 32,
    num_classes: int = 1000,
    batch_size: int = 8,
    repeats: int = 3,
    device: str = "cpu",
    backend: str = "auto",
    workers: int | None = None,
) -> list[dict]:
    """Both rows; `shard_dir` None = `n_images` generated JPEGs, `clip` None = random weights."""

    workers = default_workers() if workers is None else workers
    if clip is None:
        clip = load_clip("random", device)
    model = make_model(clip, num_classes, device)
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        if shard_dir is None:
            shard_dir = make_bench_shards(Path(tmp), n_images)
        n = load_manifest(shard_dir)["num_samples"]
        engine_s = time_call(
            lambda: predict_shards(model, shard_dir, batch_size, backend), repeats=repeats
        )
        base_s = time_call(_baseline_pass(model, shard_dir, batch_size, workers), repeats=repeats)
    store = _token_store(max(n, 4 * batch_size), num_classes)
    trained = model.as_trained()
    store_s = time_call(lambda: trained.predict_logits(store, batch_size=256), repeats=repeats)
    images_rate = rate(n, engine_s)
    return [
        {
            "backend": f"merged model from shards ({backend} decode)",
            "images_per_s": images_rate,
            "baseline": "webdataset+Pillow+open_clip encode_image",
            "baseline_images_per_s": rate(n, base_s),
            "images": n,
        },
        {
            "backend": f"cached store, tail k={DEPTH}",
            "images_per_s": rate(store.num_samples, store_s),
            "baseline": "merged model from shards",
            "baseline_images_per_s": images_rate,
            "images": store.num_samples,
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, default=None)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    rows = run(args.shards, n_images=args.images, batch_size=args.batch_size, device=args.device)
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
