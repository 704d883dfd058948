"""Run the frozen trunk (and the frozen tail of view 0, for `embed`) on decoded batches.

On CUDA: bf16 autocast (the H100's tensor cores; tokens are stored as fp16, whose 10-bit
mantissa holds bf16's 7 bits exactly, and whose range holds ViT-B/32's activations), images in
channels_last for the patch-embedding convolution, optionally `torch.compile` (with the short
last batch padded, in the same memory format, so that it compiles once). On the CPU:
plain fp32, which is what the tests compare with open_clip.

The model is never modified (no `requires_grad_`): callers may share it with a stage that
trains it; the runner computes under `torch.inference_mode` instead.

    runner = TrunkRunner(clip.model.visual, depth=2, device=torch.device("cpu"))
    embed, tokens = runner(batch.images)   # (B, 512) fp16, (V, B, 50, 768) fp16 (NumPy)
    for tag, (embed, tokens) in runner.overlapped((b.index, b.images) for b in loader):
        ...                                # batch i+1 is queued on the GPU while i is read
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from features.split import split_visual


def trunk_input(
    x: torch.Tensor, rows: int, memory_format: torch.memory_format = torch.contiguous_format
) -> torch.Tensor:
    """`x` (R, 3, H, W) in `memory_format`, padded with copies of its last row up to `rows`.

    The padded batch is allocated in `memory_format` itself (a `torch.cat` of channels_last
    parts returns a contiguous tensor), so a compiled trunk sees the same shape and strides
    for the short last batch as for the full ones. Each image is computed on its own, so the
    padding changes no other row.
    """
    if x.shape[0] >= rows:
        return x.contiguous(memory_format=memory_format)
    out = torch.empty((rows, *x.shape[1:]), dtype=x.dtype, device=x.device)
    out = out.contiguous(memory_format=memory_format)  # (rows, 3, H, W)
    out[: x.shape[0]] = x
    out[x.shape[0] :] = x[-1:]
    return out


class PendingBatch:
    """Host copies of one batch's outputs in flight; `result()` waits for them only."""

    def __init__(self, host: list[torch.Tensor], event: torch.cuda.Event | None, tokens: bool):
        self._host, self._event, self._tokens = host, event, tokens

    def result(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Host NumPy fp16: embed (B, 512) and tokens (V, B, 50, 768) or None."""
        if self._event is not None:
            self._event.synchronize()  # this batch's copies only, not the whole device
        arrays = [t.numpy() for t in self._host]
        return arrays[0], arrays[1] if self._tokens else None


class TrunkRunner:
    """Images -> (normalised embedding of view 0, trunk tokens of every view).

    Args:
        visual: open_clip `VisionTransformer` (used frozen, left unmodified but for `.to`).
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
        visual.to(device).eval()
        self.trunk, self.tail = split_visual(visual, depth)
        self.device = device
        self.cuda = device.type == "cuda"
        self.keep_tokens = keep_tokens
        self.trunk_fn = self.trunk
        self.pad_batches = (compile and self.cuda) if pad_batches is None else pad_batches
        # channels_last feeds the patch convolution's tensor-core kernels; the CPU keeps NCHW.
        self.memory_format = torch.channels_last if self.cuda else torch.contiguous_format
        self._rows = 0  # largest V*B seen: the shape a padded batch takes
        if self.cuda:
            self.trunk.conv1.to(memory_format=torch.channels_last)
            if compile:
                # Static shapes: one graph per batch shape (the padded last batch reuses the
                # full one), never a dynamic-shape graph, which runs slower kernels.
                self.trunk_fn = torch.compile(self.trunk, dynamic=False)
            # The device-to-host copies run on their own stream, so the next batch's compute,
            # queued on the current stream, overlaps this batch's copies.
            self.copy_stream = torch.cuda.Stream(device)

    def _autocast(self):
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def trunk_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Device tokens of the trunk alone: (V, B, 3, 224, 224) -> (V*B, 50, 768)."""
        x = images.to(self.device, non_blocking=True).flatten(0, 1)  # (V*B, 3, 224, 224)
        rows = x.shape[0]
        self._rows = max(self._rows, rows)
        x = trunk_input(x, self._rows if self.pad_batches else rows, self.memory_format)
        with self._autocast():
            return self.trunk_fn(x)[:rows]  # (V*B, 50, 768)

    @torch.inference_mode()
    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Device tensors: embed (B, 512) fp32 unit rows and tokens (V, B, 50, 768)."""
        views, batch = images.shape[:2]
        tokens = self.trunk_tokens(images)  # (V*B, 50, 768)
        with self._autocast():
            features = self.tail(tokens[:batch])  # (B, 512), view 0 only
        embed = F.normalize(features.float(), dim=-1)  # (B, 512)
        return embed, tokens.unflatten(0, (views, batch))  # (V, B, 50, 768)

    def submit(self, images: torch.Tensor) -> PendingBatch:
        """Queue one batch and its copies to host memory; returns at once on CUDA.

        The copies go into pinned buffers (full DMA speed) on `copy_stream`, which first waits
        for this batch's compute; an event on it marks their end. No device-wide synchronise,
        and the compute stream is free for the next batch while these copies run.
        """
        embed, tokens = self.compute(images)
        out = [embed.half()] + ([tokens.half()] if self.keep_tokens else [])
        if not self.cuda:
            return PendingBatch(out, None, self.keep_tokens)
        host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in out]
        self.copy_stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.copy_stream):
            for h, t in zip(host, out, strict=True):
                h.copy_(t, non_blocking=True)
                t.record_stream(self.copy_stream)  # not reused by compute until copied
            event = torch.cuda.Event()
            event.record(self.copy_stream)
        return PendingBatch(host, event, self.keep_tokens)

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Host NumPy fp16: embed (B, 512) and tokens (V, B, 50, 768) or None."""
        return self.submit(images).result()

    def overlapped(self, batches: Iterable[tuple[object, torch.Tensor]]) -> Iterator[tuple]:
        """`(tag, (embed, tokens))` per `(tag, images)`, in order, one batch behind.

        Batch i's results are read on the host only after batch i+1 is queued, so the device
        never idles while the host reads or decodes. Results equal `self(images)` per batch.
        When `batches` raises (a decode error, Ctrl-C), the batch already queued is still
        delivered before the error, as it would be without the overlap.
        """
        previous = None
        try:
            for tag, images in batches:
                pending = self.submit(images)
                if previous is not None:
                    yield previous[0], previous[1].result()
                previous = (tag, pending)
        except BaseException:
            if previous is not None:
                yield previous[0], previous[1].result()
            raise
        if previous is not None:
            yield previous[0], previous[1].result()
