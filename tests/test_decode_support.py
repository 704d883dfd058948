"""Shard fixtures for the decode tests: the engine shard format, written directly.

Independent of `shards.writer` so the decode tests pin the on-disk contract themselves:
WebDataset tars (`__key__`, `jpg`, `cls`, `json`), a DALI index beside each (written by
DALI's own `wds2idx` code) and `manifest.json` as in docs/architecture.md.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from shards.index import write_dali_index

try:  # DALI's own index writer, shipped inside DALI's wheel
    from wds2idx import IndexCreator
except ImportError:  # no DALI (the GPU host before DALI's wheels arrive): the engine's own
    IndexCreator = None  # writer, which test_shard_pack checks against wds2idx where it exists

# Odd geometries on purpose: portrait/landscape with fractional long sides, a long strip
# whose short side is already 224, and a tiny image that is upsampled.
SIZES = [(333, 500), (500, 333), (224, 1000), (50, 40), (640, 480), (301, 299), (1000, 223)]


def make_jpeg(width: int, height: int, seed: int, quality: int = 90) -> bytes:
    """A JPEG with smooth structure plus noise, so resampling differences are realistic."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [
            127 + 100 * np.sin(x / (7 + seed % 5)),
            127 + 100 * np.cos(y / (11 + seed % 3)),
            127 + 100 * np.sin((x + y) / 23),
        ],
        axis=-1,
    )
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def write_shards(
    out: Path,
    jpegs: list[bytes],
    *,
    shard_size: int,
    labels: list[int] | None = None,
    with_index: bool = True,
) -> dict:
    """Write `jpegs` as engine shards into `out`; returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for s, start in enumerate(range(0, len(jpegs), shard_size)):
        name = f"shard-{s:06d}"
        with wds.TarWriter(str(out / f"{name}.tar"), mtime=0) as sink:
            for i in range(start, min(start + shard_size, len(jpegs))):
                sample = {"__key__": f"img_{i:05d}", "jpg": jpegs[i]}
                meta = {"path": f"img_{i:05d}.jpg", "repaired": False, "source_format": "jpeg"}
                if labels is not None:
                    sample["cls"] = str(labels[i]).encode()
                    meta["label"] = str(labels[i])
                sample["json"] = json.dumps(meta).encode()
                sink.write(sample)
        if with_index and IndexCreator is None:
            write_dali_index(out / f"{name}.tar", out / f"{name}.idx")
        elif with_index:
            with IndexCreator(
                str(out / f"{name}.tar"), str(out / f"{name}.idx"), verbose=False
            ) as ic:
                ic.create_index()
        count = min(shard_size, len(jpegs) - start)
        shards.append({"name": f"{name}.tar", "index": f"{name}.idx", "count": count})
    classes = sorted({str(c) for c in labels}) if labels is not None else []
    manifest = {
        "format": "engine.shards/1",
        "split": "train" if labels is not None else "test",
        "labeled": labels is not None,
        "classes": classes,
        "class_counts": {},
        "shard_size": shard_size,
        "shards": shards,
        "num_samples": len(jpegs),
        "repaired": [],
        "rejected": [],
        "params": {"shard_size": shard_size, "short_side": None, "quality": 95},
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def sample_jpegs(n: int) -> list[bytes]:
    return [make_jpeg(*SIZES[i % len(SIZES)], seed=i) for i in range(n)]
