"""Split open_clip's ViT into a frozen trunk and a trainable tail at depth k.

    trunk, tail = split_visual(clip.model.visual, depth=2)
    tokens = trunk(images)        # (B, 50, 768): what enters block 12 - k
    features = tail(tokens)       # (B, 512) == clip.model.encode_image(images)

Both halves hold open_clip's own modules (shared with the model, no copies) and run open_clip's
own `_embeds` / `_pool` code, so they cannot drift from `VisionTransformer.forward`. A store of
depth k serves any k' < k: `advance_tokens` runs the k - k' blocks between them, frozen.

To train a tail apart from the model, `copy.deepcopy(tail)`; `merge_tail(model, tail)` writes
its weights back under the original `visual.` key names.
"""

from __future__ import annotations

import torch
from open_clip.transformer import VisionTransformer
from torch import nn


def split_visual(visual: VisionTransformer, depth: int) -> tuple[Trunk, Tail]:
    """Cut `visual` before its last `depth` residual blocks.

    Args:
        visual: open_clip `VisionTransformer` (`clip.model.visual`).
        depth: number of trailing blocks in the tail, 0..len(blocks).

    Returns:
        `(trunk, tail)` with `tail(trunk(x)) == visual(x)`.
    """
    num_blocks = len(visual.transformer.resblocks)
    if not 0 <= depth <= num_blocks:
        raise ValueError(f"depth must be in 0..{num_blocks}, got {depth}")
    if visual.attn_pool is not None:
        raise ValueError("attentional pooling (CoCa) is not supported; ViT-B-32 has none")
    return Trunk(visual, depth), Tail(visual, depth)


def _run_blocks(blocks: nn.ModuleList, x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """Residual blocks on batch-first tokens, whatever layout the model's blocks expect."""
    if not batch_first:
        x = x.transpose(0, 1)  # NLD -> LND
    for block in blocks:
        x = block(x, attn_mask=None)
    if not batch_first:
        x = x.transpose(0, 1)  # LND -> NLD
    return x


class Trunk(nn.Module):
    """Patch embedding + the first `12 - depth` blocks: (B, 3, 224, 224) -> (B, 50, 768)."""

    # open_clip's patch embedding (conv1, class token, positions, patch dropout, ln_pre), run
    # on the attributes below, which are the model's own modules.
    _embeds = VisionTransformer._embeds

    def __init__(self, visual: VisionTransformer, depth: int):
        super().__init__()
        num_blocks = len(visual.transformer.resblocks)
        self.conv1 = visual.conv1
        self.class_embedding = visual.class_embedding
        self.positional_embedding = visual.positional_embedding
        self.patch_dropout = visual.patch_dropout
        self.ln_pre = visual.ln_pre
        self.blocks = nn.ModuleList(visual.transformer.resblocks[: num_blocks - depth])
        self.batch_first = visual.transformer.batch_first

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self._embeds(images)  # (B, 50, 768)
        return _run_blocks(self.blocks, x, self.batch_first)  # (B, 50, 768)


class Tail(nn.Module):
    """The last `depth` blocks + ln_post + pooling + proj: (B, 50, 768) -> (B, 512)."""

    # open_clip's pooling (class token, ln_post), run on this tail's attributes.
    _pool = VisionTransformer._pool
    _global_pool = VisionTransformer._global_pool

    def __init__(self, visual: VisionTransformer, depth: int):
        super().__init__()
        num_blocks = len(visual.transformer.resblocks)
        self.first_block = num_blocks - depth  # index of blocks[0] in the full model
        self.blocks = nn.ModuleList(visual.transformer.resblocks[self.first_block :])
        self.ln_post = visual.ln_post
        self.proj = visual.proj
        self.attn_pool = None
        self.pool_type = visual.pool_type
        self.final_ln_after_pool = visual.final_ln_after_pool
        self.batch_first = visual.transformer.batch_first

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = _run_blocks(self.blocks, tokens, self.batch_first)  # (B, 50, 768)
        pooled, _ = self._pool(x)  # (B, 768)
        return pooled @ self.proj  # (B, 512)

    def visual_state_dict_key(self, name: str) -> str:
        """Name of a tail parameter (`blocks.0.ln_1.weight`) in a full CLIP state dict."""
        if name.startswith("blocks."):
            index, rest = name[len("blocks.") :].split(".", 1)
            name = f"transformer.resblocks.{self.first_block + int(index)}.{rest}"
        return f"visual.{name}"

    def visual_state_dict(self) -> dict[str, torch.Tensor]:
        """The tail's weights under their names in a full open_clip CLIP state dict."""
        return {self.visual_state_dict_key(n): v for n, v in self.state_dict().items()}


def merge_tail(model: nn.Module, tail: Tail) -> None:
    """Copy a (possibly trained, possibly copied) tail's weights into the full CLIP `model`."""
    result = model.load_state_dict(tail.visual_state_dict(), strict=False)
    if result.unexpected_keys:
        raise ValueError(f"tail keys not in the model: {result.unexpected_keys[:5]}")


@torch.no_grad()
def advance_tokens(
    visual: VisionTransformer, tokens: torch.Tensor, from_depth: int, to_depth: int
) -> torch.Tensor:
    """Run cached tokens of depth `from_depth` through the frozen blocks up to `to_depth`.

    A store of depth k holds the tokens entering block 12 - k; a trainer that unfreezes only
    k' < k blocks calls this once per batch (or once over the store) to get the tokens entering
    block 12 - k'.

    Args:
        visual: the frozen open_clip `VisionTransformer`.
        tokens: (B, 50, 768) tokens entering block `12 - from_depth`.
        from_depth: the store's depth k.
        to_depth: the wanted depth k' <= k.

    Returns:
        (B, 50, 768) tokens entering block `12 - to_depth`.
    """
    num_blocks = len(visual.transformer.resblocks)
    if not 0 <= to_depth <= from_depth <= num_blocks:
        raise ValueError(f"need 0 <= to_depth <= from_depth <= {num_blocks}")
    blocks = visual.transformer.resblocks[num_blocks - from_depth : num_blocks - to_depth]
    return _run_blocks(blocks, tokens, visual.transformer.batch_first)
