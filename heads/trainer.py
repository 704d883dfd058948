"""Train head (k = 0) or last k blocks + head (k >= 1) from a feature store, LP then FT.

    trained = fit("work/features/train.zarr", TrainConfig(unfreeze_last=2), clip=model)
    logits = trained.predict_logits(store)                      # (N, K)

Notation: `N` samples, `K` classes, `D` = 512, `V` cached views, `n` selected samples.
Phases: LP trains the head on frozen features (the stored embeddings for k = 0, the pretrained
tail's output on every cached view for k >= 1); FT trains tail + head on cached tokens, one
random view per sample per epoch as augmentation, with L2-SP, then WiSE-FT interpolation.
A store deeper than k is advanced once through the frozen blocks in between (a one-off cost
of (k_store - k) blocks per token, instead of paying it every epoch).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from engine.errors import UserError
from features.split import Advance, Tail, merge_tail
from features.store import FeatureStore, as_store
from heads import head_batch as HB
from heads import tensors as T
from heads.checkpoint import Checkpointer, fingerprint
from heads.classes import one_hot_targets
from heads.config import TrainConfig
from heads.head import class_prototypes, make_head
from heads.losses import l2sp_penalty, log_class_prior, loss_from_config, weighted_loss, wise_ft

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
            emb = torch.from_numpy(T.read_rows(data.embed, None, rows).astype(np.float32))
            return self.head(emb.to(device)).cpu().numpy()
        data.check_depth(self.depth)
        tail = self.tail.eval()
        advance = _frozen_on(Advance(self.visual, data.depth, self.depth), device)
        out = []
        for lo in range(0, len(rows), batch_size):
            tok = torch.from_numpy(T.read_rows(data.tokens, 0, rows[lo : lo + batch_size]))
            x = tok.to(device).float() if device.type == "cpu" else tok.to(device)
            with T.autocast(device):
                features = tail(advance(x)).float()  # (b, D)
            with T.fp32(device):
                out.append(self.head(features).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), np.float32)


def _frozen_on(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` itself when its weights are on `device`, else a copy there: moving it would
    move the caller's model, which other stages keep using where it is."""
    params = list(module.parameters())
    if all(T.same_device(p.device, device) for p in params):
        return module
    return copy.deepcopy(module).to(device).requires_grad_(False)


def _visual_of(clip, data: FeatureStore) -> nn.Module:
    """The vision tower to fine-tune: from `clip` (model or LoadedClip) or the store's weights."""
    if clip is None:
        from features.model import load_clip

        weights = data.weights.get("name", "openai")
        clip = load_clip(weights, "cpu")
    model = getattr(clip, "model", clip)
    return getattr(model, "visual", model)


def _epoch_order(seed: int, epoch: int, n: int, views: int):
    """Permutation and view per sample of one epoch: a function of (seed, epoch) only, so a
    resumed run draws exactly what an uninterrupted one would."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=gen), torch.randint(views, (n,), generator=gen)


def _cosine_lr(base: float, step: int, total: int) -> float:
    return base * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def _make_optimizer(groups, device: torch.device) -> torch.optim.Optimizer:
    # fused AdamW: one kernel for all parameters on CUDA; the default foreach path elsewhere.
    return torch.optim.AdamW(groups, fused=device.type == "cuda")


@dataclass
class _Problem:
    """Everything one epoch needs, on the training device."""

    targets: torch.Tensor  # (n, K)
    weights: torch.Tensor  # (n,)
    log_prior: torch.Tensor  # (K,)
    device: torch.device
    hard: torch.Tensor | None = None  # (n,) argmax of the targets, for the train accuracy

    def __post_init__(self) -> None:
        self.hard = self.targets.argmax(1)


def _run_epoch(problem, cfg, epoch, table, forward, optimizer, groups_lr, penalty=None) -> dict:
    """One pass over `table` (V, n, ...) in shuffled batches; returns the epoch's metrics."""
    n = table.shape[1]
    perm, view_of = _epoch_order(cfg.seed, epoch, n, table.shape[0])
    # Moved once per epoch: a per-step copy from pageable memory would sync the GPU each step.
    perm_d = perm.to(problem.device)
    if T.same_device(table.device, problem.device):
        perm, view_of = perm_d, view_of.to(problem.device)
    T.begin_epoch(table, perm, view_of, cfg.batch_size)  # a streamed table starts reading ahead
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
            optimizer.param_groups, groups_lr(step), strict=True
        ):
            group["lr"] = _cosine_lr(base, phase_step, phase_total)
        batch = slice(step * cfg.batch_size, (step + 1) * cfg.batch_size)
        x, t, w, hard = epoch_rows(batch)  # (B, ...), (B, K), (B,), (B,)
        with T.autocast(problem.device):
            logits = forward(x.float() if problem.device.type == "cpu" else x)  # (B, K)
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
    total, correct = float(total), int(correct)
    seconds = time.perf_counter() - start
    return {
        "epoch": epoch,
        "loss": total / n,
        "train_acc": correct / n,
        "seconds": seconds,
        "samples_per_s": n / max(seconds, 1e-9),
        "lr": [g["lr"] for g in optimizer.param_groups],
    }


def _epoch_rows(problem, table, perm, perm_d, view_of) -> Callable:
    """batch slice -> (x, targets, weights, hard labels) of those positions of the epoch.

    A features table (V, n, D) on the device is gathered once per epoch in the epoch's order,
    so a step only slices (views, no kernels): a head-only step is launch-bound (aten calls
    per CPU step of a head-only fit: 229 -> 209). Token tables (V, n, L, W) are gathered per
    batch: a second copy of them would not fit. Both give the same rows, bit for bit.
    """
    device = problem.device
    if isinstance(table, torch.Tensor) and table.dim() == 3 and T.same_device(table.device, device):
        x = T.gather_views(table, view_of, perm, device)  # (n, D)
        t, w, hard = problem.targets[perm_d], problem.weights[perm_d], problem.hard[perm_d]
        return lambda batch: (x[batch], t[batch], w[batch], hard[batch])

    def rows(batch):
        rows_d = perm_d[batch]  # (B,) on the device
        x = T.gather_views(table, view_of, perm[batch], device)  # (B, L, W)
        return x, problem.targets[rows_d], problem.weights[rows_d], problem.hard[rows_d]

    return rows


def _select(data, targets, weights, indices):
    num_classes = len(data.classes)
    if targets is None:
        targets = one_hot_targets(data.labels, num_classes)
    if weights is None:
        weights = np.ones(data.num_samples, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float32)
    rows = np.arange(data.num_samples) if indices is None else np.asarray(indices, dtype=np.int64)
    # Unlabeled rows and dropped samples (weight 0) carry no signal: leave them out.
    keep = (weights[rows] > 0) & (targets[rows].sum(1) > 0)
    rows = rows[keep]
    if len(rows) == 0:
        raise UserError("no training samples left: every sample is unlabeled or has weight 0")
    return rows, targets[rows], weights[rows]


def _make_problem(tgt: np.ndarray, wts: np.ndarray, device: torch.device) -> _Problem:
    """Targets (n, K), weights (n,) and their class prior, on the training device."""
    return _Problem(
        targets=torch.from_numpy(tgt).to(device),
        weights=torch.from_numpy(wts).to(device),
        log_prior=log_class_prior(torch.from_numpy(tgt), torch.from_numpy(wts)).to(device),
        device=device,
    )


def _initial_head(cfg, data, embed_rows, tgt, wts, head_init, device) -> nn.Module:
    """The head, initialised from `head_init` (K, D) or else the weighted class prototypes."""
    init = head_init if head_init is not None else class_prototypes(embed_rows, tgt, wts)
    head = make_head(cfg.head, len(data.classes), embed_rows.shape[1], cfg.temperature)
    head.reset_classifier(len(data.classes), weight=torch.as_tensor(init))
    return head.to(device).train()


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
    device = T.resolve_device(cfg.device)
    rows, tgt, wts = _select(data, targets, weights, indices)
    problem = _make_problem(tgt, wts, device)
    embed_rows = T.read_rows(data.embed, None, rows).astype(np.float32)  # (n, D)
    head = _initial_head(cfg, data, embed_rows, tgt, wts, head_init, device)

    visual = tail = tokens = None
    if k > 0:
        visual = _visual_of(clip, data)
        # A copy on the device: the caller's tower is left as it is (and where it is).
        tail = copy.deepcopy(Tail(visual, k)).to(device).eval().requires_grad_(False)
        tokens = _tokens_at_depth(data, rows, cfg, visual, device)  # (V, n, L, W)
    ckpt = Checkpointer(checkpoint_dir, cfg, inputs=fingerprint(rows, tgt, wts))
    cfg = _with_batch_size(cfg, problem, head, embed_rows, ckpt)
    history = _train_phases(problem, cfg, head, tail, tokens, embed_rows, ckpt, on_epoch)
    return TrainedModel(
        head=head.eval(),
        depth=k,
        classes=list(data.classes),
        cfg=cfg,
        visual=visual,
        tail=tail,
        class_counts=(tgt * wts[:, None]).sum(0).tolist(),
        history=history,
        checkpoint=ckpt,
    )


def _with_batch_size(cfg, problem, head, embed_rows, ckpt) -> TrainConfig:
    """`cfg` with its batch size (and for a measured batch, its head lr) resolved: as given,
    as the checkpoint being resumed used it, 512, or probed for head-only runs on CUDA."""
    if cfg.batch_size is not None:
        return cfg
    state = ckpt.saved()
    if state and state.get("batch_size"):
        batch = int(state["batch_size"])
    elif _probes_batch(cfg, problem.device):
        batch = _probe_head_batch(cfg, problem, head, embed_rows)
    else:
        batch = HB.REFERENCE_BATCH
    ckpt.batch_size = batch
    return replace(cfg, batch_size=batch, lr_head=HB.scaled_lr(cfg.lr_head, batch))


def _probes_batch(cfg, device: torch.device) -> bool:
    """Head-only on CUDA: the launch-bound case (see heads.head_batch)."""
    return cfg.unfreeze_last == 0 and device.type == "cuda"


def _probe_head_batch(cfg, problem, head, embed_rows) -> int:
    candidates = HB.batch_candidates(len(embed_rows))
    feats = torch.from_numpy(embed_rows[: max(candidates)]).to(problem.device)  # (b, D)
    loss_fn = loss_from_config(cfg)

    def loss_step(probe, x, t, w):
        logits = _fp32_head(probe, problem.device)(x)  # (B, K)
        return weighted_loss(loss_fn, logits, t, w, problem.log_prior, cfg.tau)

    step = HB.make_head_step(head, feats, problem, cfg, loss_step)
    batch, rates = HB.pick_batch_size(HB.step_timer(step, problem.device), candidates)
    log.info(
        "head-only batch %d (lr_head x%g), samples/s by batch: %s",
        batch,
        batch / HB.REFERENCE_BATCH,
        {b: round(r) for b, r in rates.items()},
    )
    return batch


def _tokens_at_depth(data, rows, cfg, visual, device) -> torch.Tensor:
    views = data.views if cfg.views is None else min(cfg.views, data.views)
    # (V, n, L, W) at store depth, where heads.memory.plan_tokens puts it: GPU, host, stream
    tokens = T.load_tokens(data.tokens, rows, views, device)
    advance = Advance(visual, data.depth, cfg.unfreeze_last)
    if len(advance):
        log.info("advancing cached tokens through %d frozen blocks", len(advance))
        advance = _frozen_on(advance, device)
        tokens = T.advance_table(tokens, advance, device)  # in place, or per batch if streamed
    return tokens


def _train_phases(problem, cfg, head, tail, tokens, embed_rows, ckpt, on_epoch) -> list[dict]:
    device = problem.device
    # The pretrained tail (L2-SP / WiSE-FT anchor), taken before a checkpoint may overwrite it.
    anchor = _detached_copy(tail) if tail is not None else None
    history, start = ckpt.resume(head, tail)
    if start < cfg.epochs_lp:
        if tail is None:
            feats = torch.from_numpy(embed_rows)[None].to(device)  # (1, n, D)
        else:
            feats = T.map_chunks(tail, tokens, device).to(device)  # (V, n, D) pretrained tail
        opt = _make_optimizer(
            [{"params": head.parameters(), "weight_decay": cfg.weight_decay}], device
        )
        ckpt.load_optimizer(opt, "lp")
        steps = math.ceil(feats.shape[1] / cfg.batch_size)
        total = steps * cfg.epochs_lp
        for epoch in range(start, cfg.epochs_lp):

            def lrs(step, epoch=epoch):
                return [(cfg.lr_head, epoch * steps + step, total)]

            metrics = _run_epoch(problem, cfg, epoch, feats, _fp32_head(head, device), opt, lrs)
            _log_epoch(metrics, "lp", history, on_epoch)
            ckpt.save(epoch + 1, head, tail, opt, "lp", history)
        start = cfg.epochs_lp
    if tail is not None and cfg.epochs_ft > 0:
        _fine_tune(problem, cfg, head, tail, tokens, anchor, ckpt, start, history, on_epoch)
        with torch.no_grad():
            mixed = wise_ft(anchor, _detached_copy(tail), cfg.wise_alpha)
            tail.load_state_dict(mixed)
    return history


def _detached_copy(tail: Tail) -> dict[str, torch.Tensor]:
    """Copies of the tail's parameters (the L2-SP / WiSE-FT anchor, the WiSE-FT end point)."""
    return {n: p.detach().clone() for n, p in tail.named_parameters()}


def _fine_tune(problem, cfg, head, tail, tokens, anchor, ckpt, start, history, on_epoch):
    device = problem.device
    tail.requires_grad_(True)
    tail_params = list(tail.parameters())
    anchors = [anchor[name].to(device) for name, _ in tail.named_parameters()]
    opt = _make_optimizer(
        [
            {"params": head.parameters(), "weight_decay": cfg.weight_decay},
            # no weight decay on the tail: L2-SP pulls it toward CLIP, not toward zero
            {"params": tail_params, "weight_decay": 0.0},
        ],
        device,
    )
    ckpt.load_optimizer(opt, "ft")
    steps = math.ceil(tokens.shape[1] / cfg.batch_size)
    total = steps * cfg.epochs_ft

    head_fp32 = _fp32_head(head, device)

    def forward(x):
        return head_fp32(tail(x))

    def penalty():
        return l2sp_penalty(tail_params, anchors, cfg.l2sp)

    for epoch in range(max(start, cfg.epochs_lp), cfg.epochs):
        phase_epoch = epoch - cfg.epochs_lp

        def lrs(step, e=phase_epoch):
            at = e * steps + step
            return [(cfg.lr_head, at, total), (cfg.lr_tail, at, total)]

        tail.train()
        metrics = _run_epoch(
            problem, cfg, epoch, tokens, forward, opt, lrs, penalty if cfg.l2sp > 0 else None
        )
        _log_epoch(metrics, "ft", history, on_epoch)
        ckpt.save(epoch + 1, head, tail, opt, "ft", history)
    tail.requires_grad_(False)
    tail.eval()


def _fp32_head(head: nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """`head` run outside the bf16 autocast of the tail (see `heads.tensors.fp32`)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        with T.fp32(device):
            return head(x.float())  # (B, K)

    return forward


def _log_epoch(metrics: dict, phase: str, history: list, on_epoch) -> None:
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
