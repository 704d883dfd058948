"""Parts of `bench.gpu_check` with big data: the memory plan at 300k, the features pass.

The memory part calls the token-placement planner through `plan_tokens_adapter`, the one
place that knows its signature. The features part is the only one that needs DALI; it runs
last so that every other part has reported when DALI is missing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.gpu_check_parts import CheckSizes, _fit_rate, check_line, synthetic_features
from features.store import FeatureStore

log = logging.getLogger(__name__)

PLAN_VIEWS = (1, 2, 4, 8)  # V the memory plan must hold at 300k images
DISTINCT_JPEGS = 256  # generated once, hard-linked to reach the features part's count


def plan_tokens_adapter(num_samples: int, views: int, *, gpu_free_bytes: int,
                        host_free_bytes: int):  # fmt: skip
    """The planner's decision for (N, V) on these capacities, or None when it is absent."""
    try:
        from heads.memory import plan_tokens
    except ImportError:
        return None
    return plan_tokens(
        num_samples, views, gpu_free_bytes=gpu_free_bytes, host_free_bytes=host_free_bytes
    )


def gpu_free_bytes() -> int:
    """Free GPU memory, counting what torch has cached but not allocated as free."""
    if not torch.cuda.is_available():
        return 0
    free, _ = torch.cuda.mem_get_info()
    return int(free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated())


def host_free_bytes() -> int:
    """MemAvailable from /proc/meminfo (0 where it cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _describe(plan) -> str:
    if dataclasses.is_dataclass(plan):
        return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(plan).items())
    return str(plan)


def part_memory(sizes: CheckSizes) -> list[dict]:
    """The planner's decision at 300k for V = 1, 2, 4, 8, then one fine-tune epoch (k=2)
    over N zero-filled tokens (NumPy zeros: no host time spent filling them)."""
    full_n = CheckSizes().memory_n  # the plan is arithmetic: full size even in a dry run
    gpu, host = gpu_free_bytes(), host_free_bytes()
    lines = []
    for views in PLAN_VIEWS:
        plan = plan_tokens_adapter(full_n, views, gpu_free_bytes=gpu, host_free_bytes=host)
        note = "planner not available (heads.memory.plan_tokens)" if plan is None else None
        lines.append(check_line("memory", f"plan {full_n} x V={views}", None, "plan",
                                note=note or _describe(plan)))  # fmt: skip
    clip = sizes.clip()
    visual = clip.model.visual
    base = synthetic_features(sizes.memory_n, sizes.classes, 0, visual, sizes.device)
    token_shape = (sizes.memory_n, 50, visual.transformer.width)
    tokens = np.zeros((sizes.memory_views, *token_shape), np.float16)  # (V, N, 50, 768)
    data = FeatureStore.from_arrays(embed=base.embed, labels=base.labels, classes=base.classes,
                                    tokens=tokens, depth=2)  # fmt: skip
    start = time.perf_counter()
    error = None
    try:
        rate = _fit_rate(data, sizes, clip.model, unfreeze_last=2, epochs_lp=0, epochs_ft=1,
                         batch_size=sizes.tail_batch)  # fmt: skip
    except (RuntimeError, MemoryError) as err:  # an out-of-memory is this part's finding
        rate, error = None, f"{type(err).__name__}: {str(err)[:200]}"
    seconds = time.perf_counter() - start
    name = f"fine-tune epoch, {sizes.memory_n} x V={sizes.memory_views} zero tokens"
    lines.append(check_line("memory", name + " completed", float(error is None), "bool", 1.0,
                            note=error or f"{seconds:.1f} s with setup"))  # fmt: skip
    lines.append(check_line("memory", name, rate, "samples/s"))
    return lines


def make_check_shards(
    root: Path, n: int, distinct: int = DISTINCT_JPEGS, workers: int | None = None
) -> Path:
    """`n` web-sized JPEGs packed by `engine shard`: `distinct` generated, the rest hard
    links to them (decoding costs the same; generating 32k would take minutes)."""
    from bench.decode_bench import _web_jpeg
    from shards.config import ShardConfig
    from shards.writer import pack

    rng = np.random.default_rng(0)
    src = root / "images"
    src.mkdir(parents=True)
    originals = []
    for i in range(min(n, distinct)):
        originals.append(src / f"{i:06d}.jpg")
        originals[-1].write_bytes(_web_jpeg(rng))
    for i in range(len(originals), n):
        os.link(originals[i % len(originals)], src / f"{i:06d}.jpg")
    pack(src, root / "shards", ShardConfig(short_side=None, labeled=False, workers=workers))
    return root / "shards"


def part_features(sizes: CheckSizes) -> list[dict]:
    """`engine features` from shards (DALI `mixed` on a GPU) vs webdataset + Pillow +
    open_clip on the same images, in the same run."""
    from bench.features_bench import bench_features
    from shards.decode import HAS_DALI, default_workers, resolve_backend

    if not HAS_DALI and not sizes.dry:
        return [check_line("features", "features pass", None, "img/s", 15_000,
                           note="skipped: DALI is not installed (carry its wheels)")]  # fmt: skip
    backend = resolve_backend("auto")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        start = time.perf_counter()
        shard_dir = make_check_shards(Path(tmp), sizes.features_n, workers=1 if sizes.dry else None)
        made = time.perf_counter() - start
        row = bench_features(sizes.clip(), shard_dir, depth=2, batch_size=sizes.features_batch,
                             workers=default_workers(), device=torch.device(sizes.device),
                             repeats=1)  # fmt: skip
    note = f"{row['images']} images, backend {backend}, shards made in {made:.0f} s"
    return [
        check_line("features", f"features pass ({backend}, depth 2)", row["images_per_s"],
                   "img/s", 15_000, note=note),
        check_line("features", "baseline: " + row["baseline"], row["baseline_images_per_s"],
                   "img/s"),
        check_line("features", "features pass / baseline", row["vs_baseline"], "x", 4.0),
    ]  # fmt: skip
