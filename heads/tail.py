"""The trainable end of an open_clip VisionTransformer, for the trainer.

    tail = VisualTail(visual, depth=2)      # last 2 blocks + ln_post + pool + proj
    emb = tail(tokens)                      # (B, 50, 768) -> (B, 512)

`VisualTail` is `features.split.Tail` (open_clip's own modules and pooling code, shared with
`visual`, so training it trains the visual in place and the merged model is simply
`visual.state_dict()`) plus what training needs: an anchor copy of its parameters and their
names in the visual's state dict. `prefix_blocks` are the cached blocks a deeper store left to
compute.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.errors import UserError
from features.split import Tail, split_visual


class VisualTail(Tail):
    """Last `depth` blocks, ln_post, token pooling and projection of `visual` (shared)."""

    def __init__(self, visual: nn.Module, depth: int) -> None:
        num_blocks = len(visual.transformer.resblocks)
        if not 0 <= depth <= num_blocks:
            raise UserError(f"tail depth must be in 0..{num_blocks}, got {depth}")
        if getattr(visual, "attn_pool", None) is not None:
            raise UserError("attention-pooling vision towers are not supported; use ViT-B-32")
        super().__init__(visual, depth)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Detached copies of the tail's parameters (the L2-SP / WiSE-FT anchor)."""
        return {n: p.detach().clone() for n, p in self.named_parameters()}

    def visual_key(self, name: str) -> str:
        """Name of a tail parameter inside the visual's state dict."""
        return self.visual_state_dict_key(name).removeprefix("visual.")


def prefix_blocks(visual: nn.Module, store_depth: int, depth: int) -> list[nn.Module]:
    """The frozen blocks between a store of depth `store_depth` and a tail of depth `depth`."""
    blocks = list(visual.transformer.resblocks)
    n = len(blocks)
    return blocks[n - store_depth : n - depth]


@torch.no_grad()
def visual_tokens(visual: nn.Module, images: torch.Tensor, depth: int) -> torch.Tensor:
    """What a store of depth `depth` caches: (B, 3, H, W) -> (B, L, W) before the last blocks."""
    trunk, _ = split_visual(visual, depth)
    return trunk(images)
