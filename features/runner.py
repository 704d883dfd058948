"""Run the frozen trunk (and the frozen tail of view 0, for `embed`) on decoded batches.

On CUDA: bf16 autocast (the H100's tensor cores; tokens are stored as fp16, whose 10-bit
mantissa holds bf16's 7 bits exactly, and whose range holds ViT-B/32's activations), images in
channels_last for the patch-embedding convolution, optionally `torch.compile` (with the short
last batch padded, so that it compiles once). On the CPU:
plain fp32, which is what the tests compare with open_clip.

    runner = TrunkRunner(clip.model.visual, depth=2, device=torch.device("cpu"))
    embed, tokens = runner(batch.images)   # (B, 512) fp16, (V, B, 50, 768) fp16 (NumPy)
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from features.split import split_visual


class TrunkRunner:
    """Images -> (normalised embedding of view 0, trunk tokens of every view).

    Args:
        visual: open_clip `VisionTransformer` (frozen).
        depth: blocks left to the tail; the tokens are what enters them.
        device: where to compute.
        compile: wrap the trunk in `torch.compile` (CUDA only; minutes of warm-up).
        keep_tokens: return the tokens (False for depth-0 stores, which keep only `embed`).
        pad_batches: run a short batch (the last one) padded to the largest batch seen, so
            the compiled trunk sees one shape; default: on exactly when compiling. Without it
            the short batch costs a second compilation, as long as the first.
    """

    def __init__(
        self,
        visual,
        depth: int,
        device: torch.device,
        compile: bool = False,
        keep_tokens: bool = True,
        pad_batches: bool | None = None,
    ):
        visual.to(device).eval().requires_grad_(False)
        self.trunk, self.tail = split_visual(visual, depth)
        self.device = device
        self.cuda = device.type == "cuda"
        self.keep_tokens = keep_tokens
        self.trunk_fn = self.trunk
        self.pad_batches = (compile and self.cuda) if pad_batches is None else pad_batches
        self._rows = 0  # largest V*B seen: the shape a padded batch takes
        if self.cuda:
            self.trunk.conv1.to(memory_format=torch.channels_last)
            if compile:
                self.trunk_fn = torch.compile(self.trunk)

    def _autocast(self):
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Device tensors: embed (B, 512) fp32 unit rows and tokens (V, B, 50, 768)."""
        views, batch = images.shape[:2]
        x = images.to(self.device, non_blocking=True).flatten(0, 1)  # (V*B, 3, 224, 224)
        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        rows = x.shape[0]
        with self._autocast():
            tokens = self.trunk_fn(self._padded(x))[:rows]  # (V*B, 50, 768)
            features = self.tail(tokens[:batch])  # (B, 512), view 0 only
        embed = F.normalize(features.float(), dim=-1)  # (B, 512)
        return embed, tokens.unflatten(0, (views, batch))  # (V, B, 50, 768)

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        """`x` (R, ...) with copies of its last row appended up to the largest R seen (each
        image is computed on its own, so the padding changes no other row)."""
        self._rows = max(self._rows, x.shape[0])
        if not self.pad_batches or x.shape[0] == self._rows:
            return x
        pad = x[-1:].expand(self._rows - x.shape[0], *x.shape[1:])
        return torch.cat([x, pad])

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Host NumPy fp16: embed (B, 512) and tokens (V, B, 50, 768) or None."""
        embed, tokens = self.compute(images)
        out = [embed.half()] + ([tokens.half()] if self.keep_tokens else [])
        if self.cuda:  # both copies into pinned memory at full DMA speed, then one sync
            host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in out]
            for h, t in zip(host, out, strict=True):
                h.copy_(t, non_blocking=True)
            torch.cuda.current_stream(self.device).synchronize()
            out = host
        arrays = [t.cpu().numpy() for t in out]
        return arrays[0], arrays[1] if self.keep_tokens else None
