"""Small models and image folders for tests and benchmarks (never used by the pipeline).

clip = tiny_clip()              # a 3-block, width-64 CLIP with ViT-B/32's token grid
clip = shared_random_clip()     # the real ViT-B/32, random weights, built once per process
write_images(root, {"a": 3, "b": 2})
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from features.model import RANDOM_SEED, LoadedClip, load_clip

TINY_MODEL = "tiny-test"


def tiny_clip(weights: str = "random", device="cpu") -> LoadedClip:
    """A tiny CLIP (width 64, 3 blocks, patch 32 on 224 px: 50 tokens) with seeded weights.

    Same interface as `features.model.load_clip`, so `extract(..., clip_loader=tiny_clip)`
    exercises the whole pass in a fraction of a second per image.
    """
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    if weights != "random":
        raise ValueError("tiny_clip has only random weights")
    vision = CLIPVisionCfg(layers=3, width=64, head_width=32, mlp_ratio=2.0, patch_size=32)
    text = CLIPTextCfg(context_length=8, vocab_size=64, width=32, heads=2, layers=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        model = open_clip.model.CLIP(
            embed_dim=32, vision_cfg=vision, text_cfg=text, quick_gelu=True
        )
    info = {"name": "random", "sha256": None}
    return LoadedClip(model.to(device).eval(), None, info, TINY_MODEL)


@functools.cache
def shared_random_clip() -> LoadedClip:
    """The real ViT-B/32 with random weights, built once per process (it takes seconds).

    Callers must not modify it; deep-copy the model first.
    """
    return load_clip("random")


def write_images(
    root: Path, classes: dict[str, int] | int, size=(72, 56), seed: int = 0
) -> list[Path]:
    """Write small random-content JPEGs: class folders (`{"cls": n}`) or a flat folder (`n`).

    Each image is a smooth gradient plus noise, so resizing does something non-trivial.
    """
    rng = np.random.default_rng(seed)
    layout = {"": classes} if isinstance(classes, int) else classes
    written = []
    for name, count in layout.items():
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            w, h = size[0] + 8 * i, size[1] + 4 * i
            ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
            colour = rng.uniform(0.2, 1.0, 3).astype(np.float32)
            pixels = ramp * colour + rng.normal(0, 20, (h, w, 3)).astype(np.float32)
            path = folder / f"img_{i}.jpg"
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=92)
            written.append(path)
    return written
