"""The batch size of head-only training (k = 0), picked by a short timed probe on the device.

    cfg = resolve_batch_size(cfg, problem, head, embed, checkpointer)  # what fit calls
    # which is, for a head-only run on CUDA without a batch size or a checkpoint to follow:
    seconds = step_timer(make_head_step(head, feats, problem, cfg, loss_step), device)
    batch, rates = pick_batch_size(seconds, batch_candidates(n))
    lr_head = scaled_lr(cfg.lr_head, batch)

Why: a head-only step is ~70 small kernels (the head's forward and backward, the loss, fused
AdamW) whatever the batch, so at 512 samples a GPU step costs its launches, not its math: far
below 2M samples/s. A larger batch amortises them. The probe times a few real steps (a copy of
the head, a fresh optimizer, the real features on the device) at each candidate and keeps the
smallest batch within 10% of the fastest: more steps per epoch for the same speed.

Fewer steps move the head less, so the learning rate scales with the batch (lr_head is set
for REFERENCE_BATCH = 512) and an epoch keeps >= MIN_STEPS_PER_EPOCH steps. Measured on the
CPU, simulated CLIP features (bench.synthetic, 200 classes, 15.7k samples, 30% noise, GCE,
10 epochs), clean top-1: batch 512 at lr 1e-3 (the old default) 80.0; batch 2048 at 2e-3
77.5, at 4e-3 (linear) 82.3; batch 8192 at 4e-3 73.2, at 1.6e-2 (linear) 82.3. Linear scaling
also held at 1000 classes / 39k samples (512: 72.9, 2048: 73.7, 4096: 75.1) and at 50% noise
(512: 68.5, 2048: 71.2, 8192: 71.6): one seed each, simulated features, not real CLIP ones.

Only on CUDA and only when `TrainConfig.batch_size` is None: on the CPU the math dominates
and the batch stays 512 (so seeded CPU runs are unchanged); an explicit batch is used as
given, with the learning rate as given. The choice is written into the trained model's
config and the checkpoint, so a resumed run keeps it and the run can be re-made exactly.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from heads.epoch import fp32_head
from heads.losses import loss_from_config, weighted_loss

log = logging.getLogger(__name__)

REFERENCE_BATCH = 512  # the batch lr_head's default was set for
# Powers of two: the matmul shapes GPUs like; 16384 x 1500 classes is ~100 MB of logits.
CANDIDATES = (512, 1024, 2048, 4096, 8192, 16384)
# "As fast" = within 10% of the fastest: timing noise on a busy GPU is a few percent.
NEAR_BEST = 0.9
# Even at 8192 and linear lr, 2 steps per epoch still fit the synthetic set above; 16 keeps a
# wide margin for sets whose epochs are short.
MIN_STEPS_PER_EPOCH = 16


def batch_candidates(n: int) -> list[int]:
    """The candidate batches that keep an epoch of `n` samples at >= MIN_STEPS_PER_EPOCH."""
    keep = [b for b in CANDIDATES if -(-n // b) >= MIN_STEPS_PER_EPOCH]
    return keep or [REFERENCE_BATCH]


def scaled_lr(lr: float, batch: int) -> float:
    """The head's learning rate for `batch`: linear in the batch, `lr` at REFERENCE_BATCH."""
    return lr * batch / REFERENCE_BATCH


def pick_batch_size(
    seconds_per_step: Callable[[int], float], candidates: list[int]
) -> tuple[int, dict[int, float]]:
    """The smallest candidate whose samples/s is within NEAR_BEST of the fastest.

    Args:
        seconds_per_step: batch -> measured seconds of one training step at that batch.
        candidates: batch sizes to try, any order.

    Returns:
        `(batch, {batch: samples/s})`.
    """
    rates = {b: b / max(seconds_per_step(b), 1e-12) for b in sorted(candidates)}
    best = max(rates.values())
    batch = min(b for b, rate in rates.items() if rate >= NEAR_BEST * best)
    return batch, rates


def step_timer(
    step: Callable[[int], None],
    device: torch.device,
    *,
    warmup: int = 2,
    repeats: int = 5,
    clock: Callable[[], float] = time.perf_counter,
) -> Callable[[int], float]:
    """batch -> mean seconds of one `step(batch)` over `repeats` calls after `warmup` untimed ones,
    with the device synchronised around the timed ones (kernels run asynchronously)."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def seconds(batch: int) -> float:
        for _ in range(warmup):
            step(batch)
        sync()
        start = clock()
        for _ in range(repeats):
            step(batch)
        sync()
        return (clock() - start) / repeats

    return seconds


def make_head_step(head, feats: torch.Tensor, problem, cfg, loss_step) -> Callable[[int], None]:
    """One real training step at a given batch, on a copy of the head (the real one is left
    as it is) with its own fused optimizer, over the first rows of the device features.

    Args:
        head: the head about to be trained.
        feats: (n, D) features on the training device.
        problem: the trainer's `heads.problem.Problem` (targets, weights, log prior on the device).
        cfg: the run's `TrainConfig`.
        loss_step: `(head, x, targets, weights) -> loss` as the trainer computes it.
    """
    probe = copy.deepcopy(head).train()
    optimizer = torch.optim.AdamW(
        probe.parameters(), lr=cfg.lr_head, fused=problem.device.type == "cuda"
    )

    def step(batch: int) -> None:
        rows = slice(0, batch)
        targets, weights, _ = problem.batch(rows)
        loss = loss_step(probe, feats[rows], targets, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def resolve_batch_size(cfg, problem, head, embed: torch.Tensor | None, ckpt):
    """`cfg` with its batch size (and for a measured batch, its head lr) resolved: as given,
    as the checkpoint being resumed used it, 512, or probed for head-only runs on CUDA."""
    if cfg.batch_size is not None:
        return cfg
    state = ckpt.saved()
    if state and state.get("batch_size"):
        batch = int(state["batch_size"])
    elif probes_batch(cfg, problem.device):
        batch = probe_head_batch(cfg, problem, head, embed)
    else:
        batch = REFERENCE_BATCH
    ckpt.batch_size = batch
    return replace(cfg, batch_size=batch, lr_head=scaled_lr(cfg.lr_head, batch))


def probes_batch(cfg, device: torch.device) -> bool:
    """Head-only on CUDA: the launch-bound case (see the module docstring)."""
    return cfg.unfreeze_last == 0 and device.type == "cuda"


def probe_head_batch(cfg, problem, head, embed: torch.Tensor) -> int:
    """The batch `pick_batch_size` chooses from real steps on the first rows of the fit,
    `embed` (n, D) on the device."""
    candidates = batch_candidates(len(embed))
    feats = embed[: max(candidates)]  # (b, D)
    loss_fn = loss_from_config(cfg)

    def loss_step(probe, x, t, w):
        logits = fp32_head(probe, problem.device)(x)  # (B, K)
        return weighted_loss(loss_fn, logits, t, w, problem.log_prior, cfg.tau)

    step = make_head_step(head, feats, problem, cfg, loss_step)
    batch, rates = pick_batch_size(step_timer(step, problem.device), candidates)
    log.info(
        "head-only batch %d (lr_head x%g), samples/s by batch: %s",
        batch,
        batch / REFERENCE_BATCH,
        {b: round(r) for b, r in rates.items()},
    )
    return batch
