"""Models and image folders for the tests (the tiny CLIP itself is bench.tiny_clip, which the
GPU check's dry run also uses).

clip = shared_random_clip()     # the real ViT-B/32, random weights, built once per process
write_images(root, {"a": 3, "b": 2})
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

from features.model import LoadedClip, load_clip


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
