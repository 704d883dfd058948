"""The one thing every decode backend yields."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Batch(NamedTuple):
    """A batch of decoded samples.

    Attributes:
        images: (V, B, 3, 224, 224) float32, normalised with OpenAI's mean/std; view 0 is
            the eval view.
        index: (B,) int64 global store-order index of each sample.
    """

    images: torch.Tensor
    index: torch.Tensor

    def to(self, device, non_blocking: bool = True) -> Batch:
        """The same batch with `images` on `device` (the index stays on the host)."""
        return Batch(self.images.to(device, non_blocking=non_blocking), self.index)
