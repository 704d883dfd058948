"""Train head (k = 0) or last k blocks + head (k >= 1) from a feature store, LP then FT.

    trained = fit("work/features/train.zarr", TrainConfig(unfreeze_last=2), clip=model)
    logits = trained.predict_logits(store)                      # (N, K)

Notation: `N` samples, `K` classes, `D` = 512, `V` cached views, `n` selected samples.
The fit is assembled from one module per idea: `heads.problem` (which rows, with what targets
and weights), `heads.trained_model` (the model, its inference, the tail and tokens at depth
k), `heads.head_batch` (the batch size, probed for head-only runs on CUDA),
`heads.schedule` (LP, FT with L2-SP, WiSE-FT) and `heads.epoch` (one epoch's steps).
A store deeper than k is advanced once through the frozen blocks in between (a one-off cost
of (k_store - k) blocks per token, instead of paying it every epoch).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from features.store import as_store
from heads import tensors
from heads.checkpoint import Checkpointer
from heads.config import TrainConfig
from heads.head import make_head
from heads.head_batch import resolve_batch_size
from heads.problem import make_problem, prototypes, select_rows
from heads.schedule import FitState, run_phases
from heads.trained_model import (
    TrainedModel,
    tokens_at_depth,
    trainable_tail,
    visual_of,
)

__all__ = ["TrainedModel", "fit"]


def fit(
    store,
    cfg: TrainConfig,
    targets=None,
    weights=None,
    indices=None,
    on_epoch: Callable[[int, dict], None] | None = None,
    *,
    clip=None,
    head_init: np.ndarray | None = None,
    checkpoint_dir=None,
) -> TrainedModel:
    """Train on a feature store (a path or a `features.store.FeatureStore`).

    Args:
        targets: (N, K) soft targets; default one-hot of the store's labels.
        weights: (N,) per-sample weights; default 1. Weight-0 and unlabeled rows are skipped.
        indices: rows of the store to train on (default all).
        on_epoch: called with (epoch, metrics) after every epoch.
        clip: open_clip model (or `features.model.LoadedClip`) whose visual tower made the
            store; for k >= 1 only, default: loaded from the store's `weights` attribute.
        head_init: (K, D) class directions (e.g. CLIP text embeddings); default prototypes.
        checkpoint_dir: folder for the per-epoch checkpoint; an existing one is resumed.
    """
    data = as_store(store)
    k = cfg.unfreeze_last
    data.check_depth(k)
    device = tensors.resolve_device(cfg.device)
    sel = select_rows(data, targets, weights, indices)
    problem = make_problem(sel, device)
    counts = sel.class_counts()  # (K,)
    embed = tensors.read_rows(data.embed, None, sel.rows)  # (n, D) float16, on the host
    embed = torch.from_numpy(embed).to(device).float()  # the half-size copy crosses the bus
    head = _initial_head(cfg, problem, embed, counts, head_init)
    visual = tail = tokens = None
    if k > 0:
        embed = None  # only the k = 0 LP trains on it: free the device for the token table
        visual = visual_of(clip, data)
        tail = trainable_tail(visual, k, device)
        tokens = tokens_at_depth(data, sel.rows, cfg, visual, device)  # (V, n, L, W)
    # The inputs' hash guards a resume; without a checkpoint there is nothing to guard.
    inputs = sel.fingerprint() if checkpoint_dir is not None else ""
    ckpt = Checkpointer(checkpoint_dir, cfg, inputs=inputs)
    cfg = resolve_batch_size(cfg, problem, head, embed, ckpt)
    state = FitState(problem, cfg, head, tail, tokens, embed, ckpt, on_epoch)
    history = run_phases(state)
    return TrainedModel(
        head=head.eval(),
        depth=k,
        classes=list(data.classes),
        cfg=cfg,
        visual=visual,
        tail=tail,
        class_counts=counts.tolist(),
        history=history,
        checkpoint=ckpt,
    )


def _initial_head(cfg, problem, embed, counts, head_init) -> nn.Module:
    """The head, initialised from `head_init` (K, D) or else the weighted class prototypes."""
    num_classes = problem.num_classes
    init = prototypes(embed, problem, counts) if head_init is None else torch.as_tensor(head_init)
    head = make_head(cfg.head, num_classes, embed.shape[1], cfg.temperature)
    head.reset_classifier(num_classes, weight=init)
    return head.to(problem.device).train()
