"""Shared builders for the heads tests (a helper module, not collected): tiny ViTs and feature
stores in the DESIGN.md format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from open_clip.transformer import VisionTransformer

from features.split import split_visual
from features.store import FeatureStore
from shards.decode.preprocess import PREPROCESS


def tiny_visual(seed: int = 0, layers: int = 3) -> VisionTransformer:
    """A 3-block ViT (64 px, patch 32: 5 tokens of width 32) with the ViT-B/32 layout."""
    torch.manual_seed(seed)
    return VisionTransformer(
        image_size=64,
        patch_size=32,
        width=32,
        layers=layers,
        heads=2,
        mlp_ratio=2.0,
        output_dim=16,
    ).eval()


def features_from_images(visual, images, labels, classes, depth: int, views: int = 1):
    """What a feature pass would cache: tokens at `depth` (view v = images + v*0.01), embeddings."""
    with torch.no_grad():
        emb = torch.nn.functional.normalize(visual(images), dim=-1)
        trunk, _ = split_visual(visual, depth)
        toks = [trunk(images + 0.01 * v) for v in range(views)]
    tokens = np.stack([t.numpy() for t in toks]).astype(np.float16) if depth > 0 else None
    n = len(labels)
    return FeatureStore.from_arrays(
        embed=emb.numpy().astype(np.float16),
        labels=np.asarray(labels),
        classes=list(classes),
        tokens=tokens,
        depth=depth,
        keys=[f"k{i}" for i in range(n)],
        paths=[f"img {i}.jpg" for i in range(n)],
    )


def write_store(path: Path, data: FeatureStore, weights: str = "random", **attrs) -> Path:
    """Write `data` as a Zarr v3 feature store exactly as DESIGN.md describes it, as another
    tool would (no `complete` or `source`); `attrs` override the attributes written."""
    import zarr

    group = zarr.open_group(str(path), mode="w")
    n = data.num_samples
    group.create_array("keys", shape=(n,), dtype=str)[:] = np.array(data.keys, dtype=object)
    group.create_array("paths", shape=(n,), dtype=str)[:] = np.array(data.paths, dtype=object)
    group.create_array("labels", shape=(n,), dtype="int32")[:] = data.labels.astype(np.int32)
    embed = np.asarray(data.embed, dtype=np.float16)
    group.create_array("embed", shape=embed.shape, dtype="float16")[:] = embed
    if data.tokens is not None:
        tok = np.asarray(data.tokens, dtype=np.float16)
        group.create_array(
            "tokens", shape=tok.shape, dtype="float16", chunks=(1, 8, *tok.shape[2:])
        )[:] = tok
    group.attrs.update(
        {
            "format": "engine.features/1",
            "model": "ViT-B-32",
            "weights": {"name": weights, "sha256": None},
            "depth": data.depth,
            "classes": data.classes,
            "views": data.views,
            "preprocess": PREPROCESS,
            **attrs,
        }
    )
    return path


class StopFit(Exception):
    """Raised from `on_epoch` to stop a fit the way a crash would, after a checkpoint."""


def interrupted_fit(data, cfg, checkpoint_dir, *, after_epoch: int = 1) -> None:
    """`fit` with a checkpoint folder, stopped once epoch `after_epoch` has finished."""
    import pytest

    from heads.trainer import fit

    def stop(epoch, metrics):
        if epoch == after_epoch:
            raise StopFit

    with pytest.raises(StopFit):
        fit(data, cfg, checkpoint_dir=checkpoint_dir, on_epoch=stop)


class RunsCode:
    """Unpickling this creates a file: what a hostile model.pt or checkpoint could do with
    any callable, so a loader that runs pickled code leaves `marker` behind."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))
