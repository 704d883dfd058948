"""The trainable end of an open_clip VisionTransformer, sharing its modules.

    tail = VisualTail(visual, depth=2)      # last 2 blocks + ln_post + pool + proj
    emb = tail(tokens)                      # (B, 50, 768) -> (B, 512)

The tail holds *references* to the visual's own blocks, `ln_post` and `proj`, so training it
trains the visual in place and the merged model is simply `visual.state_dict()`. It computes
what `features.split.split_visual(visual, depth)[1]` computes (tests check both against
`visual(x)`); `prefix_blocks` runs the cached blocks a deeper store left to compute.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.errors import UserError


def _blocks(visual: nn.Module) -> nn.ModuleList:
    return visual.transformer.resblocks


def check_visual(visual: nn.Module) -> None:
    """Refuse variants this tail does not reproduce (attention pooling: not ViT-B/32)."""
    if getattr(visual, "attn_pool", None) is not None:
        raise UserError("attention-pooling vision towers are not supported; use ViT-B-32")


def _run_blocks(visual: nn.Module, blocks, x: torch.Tensor) -> torch.Tensor:
    batch_first = getattr(visual.transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)  # (L, B, W)
    for block in blocks:
        x = block(x)
    if not batch_first:
        x = x.transpose(0, 1)  # (B, L, W)
    return x


class VisualTail(nn.Module):
    """Last `depth` blocks, ln_post, token pooling and projection of `visual` (shared)."""

    def __init__(self, visual: nn.Module, depth: int) -> None:
        super().__init__()
        check_visual(visual)
        num_blocks = len(_blocks(visual))
        if not 0 <= depth <= num_blocks:
            raise UserError(f"tail depth must be in 0..{num_blocks}, got {depth}")
        self.depth = depth
        self.first_block = num_blocks - depth
        self.blocks = nn.ModuleList(list(_blocks(visual))[self.first_block :])
        self.ln_post = visual.ln_post
        self.proj = visual.proj
        self.pool_type = getattr(visual, "pool_type", "tok")
        self.final_ln_after_pool = getattr(visual, "final_ln_after_pool", False)
        self.batch_first = getattr(visual.transformer, "batch_first", True)
        self._visual = [visual]  # a list: not registered, so its params are not counted twice

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "avg":
            return x[:, 1:].mean(dim=1)
        if self.pool_type == "tok":
            return x[:, 0]
        return x  # "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _run_blocks(self._visual[0], self.blocks, x)  # (B, L, W)
        if self.final_ln_after_pool:
            pooled = self.ln_post(self._pool(x))
        else:
            pooled = self._pool(self.ln_post(x))  # (B, W)
        if self.proj is not None:
            pooled = pooled @ self.proj  # (B, D)
        return pooled

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Detached copies of the tail's parameters (the L2-SP / WiSE-FT anchor)."""
        return {n: p.detach().clone() for n, p in self.named_parameters()}

    def visual_key(self, name: str) -> str:
        """Name of a tail parameter inside the visual's state dict."""
        if name.startswith("blocks."):
            idx, rest = name[len("blocks.") :].split(".", 1)
            return f"transformer.resblocks.{self.first_block + int(idx)}.{rest}"
        return name


def prefix_blocks(visual: nn.Module, store_depth: int, depth: int):
    """The frozen blocks between a store of depth `store_depth` and a tail of depth `depth`."""
    blocks = _blocks(visual)
    n = len(blocks)
    return list(blocks)[n - store_depth : n - depth]


@torch.no_grad()
def run_prefix(visual: nn.Module, blocks, tokens: torch.Tensor) -> torch.Tensor:
    """Advance cached tokens (B, L, W) through frozen `blocks`."""
    return _run_blocks(visual, blocks, tokens) if blocks else tokens


def visual_tokens(visual: nn.Module, images: torch.Tensor, depth: int) -> torch.Tensor:
    """What a store of depth `depth` caches: (B, 3, H, W) -> (B, L, W) before the last blocks."""
    x = visual._embeds(images)  # (B, L, W)
    blocks = _blocks(visual)
    return _run_blocks(visual, list(blocks)[: len(blocks) - depth], x)
