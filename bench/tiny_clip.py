"""A tiny CLIP with ViT-B/32's token grid: the GPU check's dry run and the tests use it.

clip = tiny_clip()     # 3 blocks, width 64, patch 32 on 224 px: 50 tokens, seeded weights
"""

from __future__ import annotations

import open_clip
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg

from features.model import RANDOM_SEED, LoadedClip

TINY_MODEL = "tiny-test"


def tiny_clip(weights: str = "random", device="cpu") -> LoadedClip:
    """A tiny CLIP (width 64, 3 blocks, patch 32 on 224 px: 50 tokens) with seeded weights.

    Same interface as `features.model.load_clip`, so `extract(..., clip_loader=tiny_clip)`
    exercises the whole pass in a fraction of a second per image.
    """

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
