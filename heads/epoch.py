"""One training epoch: the seeded batch order, the cosine learning rate, the step loop.

    metrics = run_epoch(problem, cfg, epoch, table, forward, optimizer, lrs, penalty)

`table` is (V, n, D) features or (V, n, L, W) tokens (`heads.tensors`); each epoch draws one
view per sample and a permutation from (seed, epoch) only, so a resumed run draws exactly what
an uninterrupted one would. Sums stay on the device during the epoch and are read once at its
end, where a non-finite loss stops the run in one line.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch
from torch import nn
from tqdm import tqdm

from engine.errors import UserError
from heads import tensors
from heads.losses import loss_from_config, weighted_loss
from heads.problem import Problem

log = logging.getLogger(__name__)


def epoch_order(seed: int, epoch: int, n: int, views: int):
    """Permutation and view per sample of one epoch: a function of (seed, epoch) only, so a
    resumed run draws exactly what an uninterrupted one would."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=gen), torch.randint(views, (n,), generator=gen)


def cosine_lr(base: float, step: int, total: int) -> float:
    return base * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def make_optimizer(groups, device: torch.device) -> torch.optim.Optimizer:
    # fused AdamW: one kernel for all parameters on CUDA; the default foreach path elsewhere.
    return torch.optim.AdamW(groups, fused=device.type == "cuda")


def fp32_head(head: nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """`head` run outside the bf16 autocast of the tail (see `heads.tensors.fp32`)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        with tensors.fp32(device):
            return head(x.float())  # (B, K)

    return forward


def run_epoch(problem: Problem, cfg, epoch, table, forward, optimizer, lrs, penalty=None) -> dict:
    """One pass over `table` (V, n, ...) in shuffled batches; returns the epoch's metrics.

    `lrs(step)` gives (base lr, step in phase, steps in phase) per parameter group;
    `penalty()` (or None) is added to every step's loss.
    """
    n = table.shape[1]
    perm, view_of = epoch_order(cfg.seed, epoch, n, table.shape[0])
    # Moved once per epoch: a per-step copy from pageable memory would sync the GPU each step.
    perm_d = perm.to(problem.device)
    if tensors.same_device(table.device, problem.device):
        perm, view_of = perm_d, view_of.to(problem.device)
    tensors.begin_epoch(table, perm, view_of, cfg.batch_size)  # a streamed table reads ahead
    epoch_rows = _epoch_rows(problem, table, perm, perm_d, view_of)
    loss_fn = loss_from_config(cfg)
    steps = math.ceil(n / cfg.batch_size)
    # Sums stay on the device: a float()/int() per step would synchronise the GPU every step.
    total = torch.zeros((), device=problem.device)
    correct = torch.zeros((), dtype=torch.long, device=problem.device)
    start = time.perf_counter()
    bar = tqdm(total=n, unit="sample", desc=f"epoch {epoch}", leave=False, disable=None)
    for step in range(steps):
        for group, (base, phase_step, phase_total) in zip(
            optimizer.param_groups, lrs(step), strict=True
        ):
            group["lr"] = cosine_lr(base, phase_step, phase_total)
        batch = slice(step * cfg.batch_size, (step + 1) * cfg.batch_size)
        x, t, w, hard = epoch_rows(batch)  # (B, ...), (B, K), (B,), (B,)
        with tensors.autocast(problem.device):
            logits = forward(tensors.to_compute(x, problem.device))  # (B, K)
        loss = weighted_loss(loss_fn, logits, t, w, problem.log_prior, cfg.tau)
        if penalty is not None:
            loss = loss + penalty()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(t)
        correct += (logits.argmax(1) == hard).sum()
        bar.update(len(t))
    bar.close()
    total, correct = float(total), int(correct)  # the epoch's one read from the device
    _check_finite(total / n, epoch, cfg)
    seconds = time.perf_counter() - start
    return {
        "epoch": epoch,
        "loss": total / n,
        "train_acc": correct / n,
        "seconds": seconds,
        "samples_per_s": n / max(seconds, 1e-9),
        "lr": [g["lr"] for g in optimizer.param_groups],
    }


def _check_finite(loss: float, epoch: int, cfg) -> None:
    """Stop before a NaN model is checkpointed or saved: NaN weights predict one class for
    every image and the run would still exit 0."""
    if not math.isfinite(loss):
        raise UserError(
            f"training diverged: the loss of epoch {epoch} is {loss}; lower lr_head "
            f"({cfg.lr_head}) or lr_tail ({cfg.lr_tail}) in the run's config, or check the "
            "feature store for non-finite values"
        )


def _epoch_rows(problem: Problem, table, perm, perm_d, view_of) -> Callable:
    """batch slice -> (x, targets, weights, hard labels) of those positions of the epoch.

    A features table (V, n, D) on the device is gathered once per epoch in the epoch's order,
    so a step only slices (views, no kernels): a head-only step is launch-bound (aten calls
    per CPU step of a head-only fit: 229 -> 209). Token tables (V, n, L, W) are gathered per
    batch: a second copy of them would not fit. Both give the same rows, bit for bit.
    """
    device = problem.device
    on_device = tensors.same_device(table.device, device)
    if isinstance(table, torch.Tensor) and table.dim() == 3 and on_device:
        x = tensors.gather_views(table, view_of, perm, device)  # (n, D)
        ordered = problem.reordered(perm_d)
        return lambda batch: (x[batch], *ordered.batch(batch))

    def rows(batch):
        x = tensors.gather_views(table, view_of, perm[batch], device)  # (B, L, W)
        return x, *problem.batch(perm_d[batch])

    return rows


def log_epoch(metrics: dict, phase: str, history: list, on_epoch) -> None:
    """Record one epoch's metrics in `history`, the log and the caller's `on_epoch`."""
    metrics["phase"] = phase
    history.append(metrics)
    log.info(
        "epoch %d (%s): loss %.4f, train acc %.3f, %.0f samples/s",
        metrics["epoch"],
        phase,
        metrics["loss"],
        metrics["train_acc"],
        metrics["samples_per_s"],
    )
    if on_epoch is not None:
        on_epoch(metrics["epoch"], metrics)
