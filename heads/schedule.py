"""The LP-FT schedule of one fit: linear probe, then fine-tune with L2-SP, then WiSE-FT.

    state = FitState(problem, cfg, head, tail, tokens, embed, ckpt, on_epoch)
    run_phases(state)                       # trains head (and tail) in place; state.history

LP trains the head on frozen features (the stored embeddings for k = 0, the pretrained tail's
output on every cached view for k >= 1); FT trains tail + head on cached tokens, one random
view per sample per epoch as augmentation, with L2-SP toward the pretrained tail, and ends
with WiSE-FT interpolation toward it. Every epoch is checkpointed, and a resumed fit starts at
the first epoch not yet saved.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from features.split import Tail
from heads import tensors
from heads.checkpoint import Checkpointer
from heads.config import TrainConfig
from heads.epoch import fp32_head, log_epoch, make_optimizer, run_epoch
from heads.losses import L2SP, wise_ft
from heads.problem import Problem


@dataclass
class FitState:
    """One fit's state: what it trains, on what, and where it stands."""

    problem: Problem
    cfg: TrainConfig
    head: nn.Module
    tail: Tail | None  # None for a head-only fit (k = 0)
    tokens: object | None  # (V, n, L, W) token table at depth k (k >= 1), see heads.tensors
    embed: torch.Tensor | None  # (n, D) stored embeddings on the device: the k = 0 LP features
    ckpt: Checkpointer
    on_epoch: Callable[[int, dict], None] | None = None
    # the pretrained tail (L2-SP / WiSE-FT anchor), taken before a checkpoint overwrites it
    anchor: dict[str, torch.Tensor] | None = None
    history: list[dict] = field(default_factory=list)
    start: int = 0  # first epoch to run (after a resume)

    @property
    def device(self) -> torch.device:
        return self.problem.device


def run_phases(state: FitState) -> list[dict]:
    """LP, then FT and WiSE-FT for k >= 1; returns the history of every epoch."""
    if state.tail is not None:
        state.anchor = detached_copy(state.tail)
    state.history, state.start = state.ckpt.resume(state.head, state.tail)
    if state.start < state.cfg.epochs_lp:
        _linear_probe(state)
        state.start = state.cfg.epochs_lp
    if state.tail is not None and state.cfg.epochs_ft > 0:
        _fine_tune(state)
        with torch.no_grad():
            mixed = wise_ft(state.anchor, detached_copy(state.tail), state.cfg.wise_alpha)
            state.tail.load_state_dict(mixed)
    return state.history


def detached_copy(tail: Tail) -> dict[str, torch.Tensor]:
    """Copies of the tail's parameters (the L2-SP / WiSE-FT anchor, the WiSE-FT end point)."""
    return {n: p.detach().clone() for n, p in tail.named_parameters()}


def _lp_features(state: FitState) -> torch.Tensor:
    """(V, n, D) features the LP phase trains on, on the device."""
    if state.tail is None:
        return state.embed[None]  # (1, n, D)
    return tensors.map_chunks(state.tail, state.tokens, state.device).to(state.device)


def _linear_probe(state: FitState) -> None:
    cfg, device = state.cfg, state.device
    feats = _lp_features(state)
    opt = make_optimizer(
        [{"params": state.head.parameters(), "weight_decay": cfg.weight_decay}], device
    )
    state.ckpt.load_optimizer(opt, "lp")
    steps = math.ceil(feats.shape[1] / cfg.batch_size)
    total = steps * cfg.epochs_lp
    forward = fp32_head(state.head, device)
    for epoch in range(state.start, cfg.epochs_lp):

        def lrs(step, epoch=epoch):
            return [(cfg.lr_head, epoch * steps + step, total)]

        metrics = run_epoch(state.problem, cfg, epoch, feats, forward, opt, lrs)
        _end_epoch(state, metrics, "lp", opt)


def _fine_tune(state: FitState) -> None:
    cfg, device, tail = state.cfg, state.device, state.tail
    tail.requires_grad_(True)
    tail_params = list(tail.parameters())
    anchors = [state.anchor[name].to(device) for name, _ in tail.named_parameters()]
    opt = make_optimizer(
        [
            {"params": state.head.parameters(), "weight_decay": cfg.weight_decay},
            # no weight decay on the tail: L2-SP pulls it toward CLIP, not toward zero
            {"params": tail_params, "weight_decay": 0.0},
        ],
        device,
    )
    state.ckpt.load_optimizer(opt, "ft")
    steps = math.ceil(state.tokens.shape[1] / cfg.batch_size)
    total = steps * cfg.epochs_ft
    head_fp32 = fp32_head(state.head, device)

    def forward(x):
        return head_fp32(tail(x))

    penalty = L2SP(tail_params, anchors, cfg.l2sp)

    for epoch in range(max(state.start, cfg.epochs_lp), cfg.epochs):
        phase_epoch = epoch - cfg.epochs_lp

        def lrs(step, e=phase_epoch):
            at = e * steps + step
            return [(cfg.lr_head, at, total), (cfg.lr_tail, at, total)]

        tail.train()
        metrics = run_epoch(state.problem, cfg, epoch, state.tokens, forward, opt, lrs,
                            penalty if cfg.l2sp > 0 else None)  # fmt: skip
        _end_epoch(state, metrics, "ft", opt)
    tail.requires_grad_(False)
    tail.eval()


def _end_epoch(state: FitState, metrics: dict, phase: str, opt) -> None:
    log_epoch(metrics, phase, state.history, state.on_epoch)
    state.ckpt.save(metrics["epoch"] + 1, state.head, state.tail, opt, phase, state.history)
