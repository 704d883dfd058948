"""The trained model and its inference, and the frozen parts of the tower a fit reads through.

    trained = heads.trainer.fit(store, cfg)          # a TrainedModel
    logits = trained.predict_logits(store)           # (N, K) float32

Notation: `N` samples, `K` classes, `D` = 512 embedding width, `(V, n, L, W)` a token table.
Shared by the fit (which builds the tail and the token table at depth k) and by prediction
(which pushes the store's view-0 tokens through the same frozen blocks and trained tail).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from features import model as clip_model
from features.split import Advance, Tail, merge_tail
from features.store import FeatureStore, as_store
from heads import tensors
from heads.checkpoint import Checkpointer
from heads.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    """A trained head, and for k >= 1 the trained tail of the visual tower it was cut from."""

    head: nn.Module
    depth: int
    classes: list[str]
    cfg: TrainConfig
    visual: nn.Module | None = None  # the pretrained tower (k >= 1): the tail's base, left as is
    tail: Tail | None = None  # the trained last k blocks + pooling + proj (k >= 1)
    class_counts: list[float] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    checkpoint: Checkpointer | None = field(default=None, repr=False)

    def visual_state_dict(self) -> dict[str, torch.Tensor]:
        """The visual tower's state dict with the trained tail merged in (k >= 1)."""
        if self.visual is None or self.tail is None:
            raise ValueError("a head-only model has no trained visual tower")
        return merge_tail(self.visual.state_dict(), self.tail)

    @torch.no_grad()
    def predict_logits(self, store, indices=None, batch_size: int = 1024) -> np.ndarray:
        """(n, K) float32 logits from the store's embeddings (k = 0) or view-0 tokens (k >= 1)."""
        data = as_store(store)
        rows = np.arange(data.num_samples) if indices is None else np.asarray(indices)
        device = next(self.head.parameters()).device
        self.head.eval()
        if self.depth == 0:
            emb = torch.from_numpy(tensors.read_rows(data.embed, None, rows).astype(np.float32))
            return self.head(emb.to(device)).cpu().numpy()
        data.check_depth(self.depth)
        tail = self.tail.eval()
        advance = frozen_on(Advance(self.visual, data.depth, self.depth), device)
        out = []
        for lo in range(0, len(rows), batch_size):
            tok = torch.from_numpy(tensors.read_rows(data.tokens, 0, rows[lo : lo + batch_size]))
            x = tensors.to_compute(tok.to(device), device)
            with tensors.autocast(device):
                features = tail(advance(x)).float()  # (b, D)
            with tensors.fp32(device):
                out.append(self.head(features).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), np.float32)


def frozen_on(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` itself when its weights are on `device`, else a copy there: moving it would
    move the caller's model, which other stages keep using where it is."""
    params = list(module.parameters())
    if all(tensors.same_device(p.device, device) for p in params):
        return module
    return copy.deepcopy(module).to(device).requires_grad_(False)


def visual_of(clip, data: FeatureStore) -> nn.Module:
    """The vision tower to fine-tune: from `clip` (model or LoadedClip) or the store's weights."""
    if clip is None:
        weights = data.weights.get("name", "openai")
        clip = clip_model.load_clip(weights, "cpu")
    model = getattr(clip, "model", clip)
    return getattr(model, "visual", model)


def trainable_tail(visual: nn.Module, k: int, device: torch.device) -> Tail:
    """The last k blocks (+ pooling, proj) as a frozen copy on `device`: the caller's tower is
    left as it is (and where it is)."""
    return copy.deepcopy(Tail(visual, k)).to(device).eval().requires_grad_(False)


def tokens_at_depth(data: FeatureStore, rows, cfg: TrainConfig, visual, device):
    """(V, n, L, W) token table of `rows` advanced from the store's depth to depth k."""
    views = data.views if cfg.views is None else min(cfg.views, data.views)
    # at store depth, where heads.memory.plan_tokens puts it: GPU, host, stream
    tokens = tensors.load_tokens(data.tokens, rows, views, device)
    advance = Advance(visual, data.depth, cfg.unfreeze_last)
    if len(advance):
        log.info("advancing cached tokens through %d frozen blocks", len(advance))
        advance = frozen_on(advance, device)
        tokens = tensors.advance_table(tokens, advance, device)  # in place, or per batch
    return tokens
