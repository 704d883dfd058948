"""Classifier heads over the 512-d CLIP embedding, and their initialisation.

    head = make_head("cosine", num_classes=K, dim=512, temperature=0.05)
    head.reset_classifier(K, weight=class_prototypes(embed, labels, K))
    logits = head(embedding)                                # (N, K)

Heads follow timm's split: `forward_features` (L2-normalises the embedding: stored
embeddings are normalised, the tail's output is not, so both paths see the same input),
`forward_head(x, pre_logits)`, `reset_classifier(num_classes, weight)`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import UserError
from engine.registry import Registry
from heads import classes

HEADS: Registry[type[nn.Module]] = Registry("head", error=UserError)
register_head = HEADS.register


def list_heads() -> list[str]:
    return HEADS.names()


def make_head(kind: str, num_classes: int, dim: int = 512, temperature: float = 0.05) -> nn.Module:
    return HEADS.get(kind)(num_classes, dim, temperature)


class _Head(nn.Module):
    kind = ""

    def __init__(self, num_classes: int, dim: int, temperature: float) -> None:
        super().__init__()
        self.dim = dim
        self.temperature = temperature
        self.weight = nn.Parameter(torch.zeros(num_classes, dim))
        self.bias = nn.Parameter(torch.zeros(num_classes))

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.float(), dim=-1)  # (N, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, weight: torch.Tensor | None = None) -> None:
        """New classifier for `num_classes`; `weight` (K, D) = class directions (normalised here)."""
        w = torch.zeros(num_classes, self.dim) if weight is None else torch.as_tensor(weight)
        w = F.normalize(w.float(), dim=-1)
        self.weight = nn.Parameter(w * self._init_scale())
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def _init_scale(self) -> float:
        return 1.0


@register_head("cosine")
class CosineHead(_Head):
    """logits = cos(x, w_k) / temperature: no class can win by a larger weight norm."""

    kind = "cosine"

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return x
        w = F.normalize(self.weight.float(), dim=-1)  # (K, D)
        return (x @ w.t()) / self.temperature  # (N, K)


@register_head("linear")
class LinearHead(_Head):
    """logits = x w^T + b, initialised to the cosine head's logits (w = direction/temperature)."""

    kind = "linear"

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return x
        return x @ self.weight.float().t() + self.bias.float()  # (N, K)

    def _init_scale(self) -> float:
        return 1.0 / self.temperature


def class_prototypes(embed: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(K, D) weighted unit class means of the normalised (N, D) embeddings, from (N, K) soft
    targets and (N,) weights (`heads.classes.class_prototypes` on NumPy arrays).

    A class with no weight gets the global mean direction, so its logit starts neutral.
    """
    x = F.normalize(torch.from_numpy(np.asarray(embed, np.float32)), dim=1, eps=1e-12)  # (N, D)
    t, w = torch.from_numpy(np.asarray(targets, np.float32)), torch.from_numpy(weights)
    protos = classes.class_prototypes(x, t, w.float())  # (K, D)
    empty = (t * w[:, None]).sum(0) <= 0  # (K,)
    if empty.any():
        protos[empty] = F.normalize(x.mean(0), dim=0, eps=1e-12)
    return protos.numpy()
