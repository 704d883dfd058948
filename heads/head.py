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

_HEADS: dict[str, type[nn.Module]] = {}


def register_head(name: str):
    def wrap(cls):
        _HEADS[name] = cls
        return cls

    return wrap


def list_heads() -> list[str]:
    return sorted(_HEADS)


def make_head(kind: str, num_classes: int, dim: int = 512, temperature: float = 0.05) -> nn.Module:
    if kind not in _HEADS:
        raise UserError(f"unknown head {kind!r}; choose one of {list_heads()}")
    return _HEADS[kind](num_classes, dim, temperature)


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
    """Weighted mean of normalised embeddings per class (K, D), from soft targets (N, K).

    A class with no weight gets the global mean direction, so its logit starts neutral.
    """
    x = embed.astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    w = targets * weights[:, None]  # (N, K)
    protos = w.T @ x  # (K, D)
    empty = w.sum(0) <= 0
    if empty.any():
        protos[empty] = x.mean(0)
    return protos / np.linalg.norm(protos, axis=1, keepdims=True).clip(1e-12)
