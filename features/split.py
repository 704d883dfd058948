"""The one place that cuts open_clip's ViT at depth k, runs the pieces, and merges them back.

    trunk, tail = split_visual(visual, depth=2)
    tokens = trunk(images)                      # (B, 50, 768): what enters block 12 - k
    features = tail(tokens)                     # (B, 512) == visual(images)
    tokens1 = Advance(visual, 2, 1)(tokens)     # a depth-2 store serving k' = 1
    state = merge_tail(visual.state_dict(), trained_tail)   # one open_clip visual state dict

Public open_clip hooks where they exist: the trunk is `VisionTransformer.forward_intermediates`
stopped early at block 11 - k, the blocks are `visual.transformer.resblocks`. open_clip has no
public hook for the pooling alone or for the embeddings without a block, so the tail borrows
`VisionTransformer._pool` (the very code `forward` runs) and a depth-12 trunk runs `_embeds`.

Trunk and tail hold the model's own modules (no copies): training a tail trains the model in
place. To train a tail apart from the model, `copy.deepcopy(tail)`; `merge_tail` writes its
weights back under the visual's key names. Everything the trainer, the exporter, prediction
and the feature pass do with the tail goes through this module.
"""

from __future__ import annotations

import torch
from open_clip.transformer import VisionTransformer
from torch import nn

from engine.errors import UserError


def num_blocks(visual: VisionTransformer) -> int:
    return len(visual.transformer.resblocks)


def split_visual(visual: VisionTransformer, depth: int) -> tuple[Trunk, Tail]:
    """Cut `visual` before its last `depth` residual blocks.

    Args:
        visual: open_clip `VisionTransformer` (`clip.model.visual`).
        depth: number of trailing blocks in the tail, 0..len(blocks).

    Returns:
        `(trunk, tail)` with `tail(trunk(x)) == visual(x)`.
    """
    _check_depth(visual, depth)
    return Trunk(visual, depth), Tail(visual, depth)


def _check_depth(visual: VisionTransformer, *depths: int) -> None:
    total = num_blocks(visual)
    for depth in depths:
        if not 0 <= depth <= total:
            raise UserError(f"tail depth must be in 0..{total}, got {depth}")
    if getattr(visual, "attn_pool", None) is not None:
        raise UserError("attention-pooling vision towers (CoCa) are not supported; use ViT-B-32")


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """Residual blocks on batch-first tokens (B, L, W), whatever layout the blocks expect."""
    if not batch_first:
        x = x.transpose(0, 1)  # NLD -> LND
    for block in blocks:
        x = block(x, attn_mask=None)
    if not batch_first:
        x = x.transpose(0, 1)  # LND -> NLD
    return x  # (B, L, W)


class Advance(nn.Module):
    """The frozen blocks between a store of depth `from_depth` and a tail of depth `to_depth`:
    tokens entering block 12 - from_depth -> tokens entering block 12 - to_depth.

    Empty (the identity) when the depths are equal; `len(advance)` says how many blocks run.
    """

    def __init__(self, visual: VisionTransformer, from_depth: int, to_depth: int) -> None:
        _check_depth(visual, from_depth, to_depth)
        if to_depth > from_depth:
            raise UserError(
                f"a store of depth {from_depth} cannot serve a tail of depth {to_depth}; "
                f"rebuild features with depth >= {to_depth}"
            )
        super().__init__()
        total = num_blocks(visual)
        self.blocks = nn.ModuleList(
            visual.transformer.resblocks[total - from_depth : total - to_depth]
        )
        self.batch_first = visual.transformer.batch_first

    def __len__(self) -> int:
        return len(self.blocks)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return run_blocks(self.blocks, tokens, self.batch_first)  # (B, L, W)


class Trunk(nn.Module):
    """Patch embedding + the first `12 - depth` blocks: (B, 3, 224, 224) -> (B, 50, 768)."""

    def __init__(self, visual: VisionTransformer, depth: int) -> None:
        super().__init__()
        self.visual = visual
        self.last_block = num_blocks(visual) - depth - 1  # -1: no block, embeddings only

    @property
    def conv1(self) -> nn.Module:
        """The patch-embedding convolution (the runner sets its memory format)."""
        return self.visual.conv1

    @property
    def blocks(self) -> nn.ModuleList:
        return self.visual.transformer.resblocks[: self.last_block + 1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.last_block < 0:
            return self.visual._embeds(images)  # (B, 50, 768); no public hook for this
        out = self.visual.forward_intermediates(
            images,
            indices=[self.last_block],
            stop_early=True,
            intermediates_only=True,
            output_fmt="NLC",
            output_extra_tokens=True,
        )
        prefix, patches = out["image_intermediates_prefix"][0], out["image_intermediates"][0]
        return torch.cat([prefix, patches], dim=1)  # (B, 1 + 49, 768)


class Tail(nn.Module):
    """The last `depth` blocks + ln_post + pooling + proj: (B, 50, 768) -> (B, 512)."""

    # open_clip's pooling (class token, ln_post), run on this tail's own attributes, so a
    # deep copy of the tail pools exactly like the model.
    _pool = VisionTransformer._pool
    _global_pool = VisionTransformer._global_pool

    def __init__(self, visual: VisionTransformer, depth: int) -> None:
        super().__init__()
        self.first_block = num_blocks(visual) - depth  # index of blocks[0] in the full model
        self.blocks = nn.ModuleList(visual.transformer.resblocks[self.first_block :])
        self.batch_first = visual.transformer.batch_first
        self.ln_post = visual.ln_post
        self.proj = visual.proj
        self.attn_pool = None
        self.pool_type = visual.pool_type
        self.final_ln_after_pool = visual.final_ln_after_pool

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = run_blocks(self.blocks, tokens, self.batch_first)  # (B, 50, 768)
        pooled, _ = self._pool(x)  # (B, 768)
        return pooled @ self.proj  # (B, 512)

    def visual_key(self, name: str) -> str:
        """Name of a tail parameter (`blocks.0.ln_1.weight`) in the visual's state dict."""
        if name.startswith("blocks."):
            index, rest = name[len("blocks.") :].split(".", 1)
            name = f"transformer.resblocks.{self.first_block + int(index)}.{rest}"
        return name

    def visual_state_dict(self) -> dict[str, torch.Tensor]:
        """The tail's weights under their names in the visual's state dict (`proj`,
        `ln_post.weight`, `transformer.resblocks.11.attn.in_proj_weight`, ...)."""
        return {self.visual_key(n): v for n, v in self.state_dict().items()}


def merge_tail(visual_state: dict[str, torch.Tensor], tail: Tail) -> dict[str, torch.Tensor]:
    """A copy of a visual's state dict with a (trained, possibly copied) tail's weights in it.

    Args:
        visual_state: `visual.state_dict()` of the tower the tail was cut from.
        tail: the tail; its tensors are detached, moved to the CPU and cast to the dtype of
            the entry they replace.

    Returns:
        A new state dict that `VisionTransformer.load_state_dict` takes (strict).
    """
    merged = dict(visual_state)
    for key, value in tail.visual_state_dict().items():
        if key not in merged or merged[key].shape != value.shape:
            raise ValueError(f"the tail does not match the visual at {key}")
        merged[key] = value.detach().to("cpu", merged[key].dtype).clone()
    return merged
