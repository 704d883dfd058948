"""A small softmax probe on frozen embeddings: the screening's own trainer and verifier.

    probe = train_probe(embed[idx], targets[idx], weights[idx], cfg=ProbeConfig())
    logits = probe.predict_logits(embed)            # (n, K), balanced (prior removed)

Screening needs a head trained many times (K folds in round 0, two halves per later round)
in seconds, and one that is independent of the model being fine-tuned (SRRS's verifier), so
it lives here instead of reusing `heads.trainer`. It is a linear head initialised from the
class prototypes (a nearest-class-mean classifier at step 0), trained full-batch with Adam on
soft targets and per-sample weights, with logit adjustment (Menon et al. 2021) so that its
predictions target a balanced test set. Shapes: N samples, K classes, D embedding width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from tqdm import tqdm

from engine.ranges import NON_NEGATIVE, POSITIVE, Interval, check_ranges
from heads.classes import class_prototypes
from heads.losses import LOSSES, make_loss
from heads.tensors import float32_on, resolve_device

# Cosine scale of the prototype init: makes the initial softmax as sharp as a trained one.
INIT_SCALE = 16.0
# Mild: 30 steps from a prototype init leave the weights near it anyway.
WEIGHT_DECAY = 1e-4
# Rows per step: full batch below this size, minibatches (one epoch per step) above, so a
# (rows, K) step stays well inside a GPU's memory at 1500 classes.
BATCH_ROWS = 65536


@dataclass
class ProbeConfig:
    """How the probe trains; defaults measured on `bench.noisy_bench` (a few s on 2 CPU cores).

    Where it trains and its seed are the screening's (`ScreenConfig.device`, `.seed`)."""

    # Full-batch Adam steps: the prototype init is close; more steps overfit noisy labels.
    steps: int = 30
    lr: float = 0.03
    # Logit-adjustment strength tau: 1 is the Bayes-optimal value for a balanced test set;
    # 0 gives the plain-CE probe of the bench's baselines.
    logit_adjust: float = 1.0
    # A loss of `heads.losses.LOSSES` with its defaults (gce: `heads.losses.GCE_Q`): CE by
    # default since the screening's soft targets and weights already discount noisy labels.
    loss: str = "ce"

    RANGES: ClassVar[dict[str, Interval]] = {"lr": POSITIVE, "logit_adjust": NON_NEGATIVE}

    def __post_init__(self):
        LOSSES.get(self.loss)  # any registered loss, named in one line when unknown
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        check_ranges(self, self.RANGES, "screen.probe")


@dataclass
class ProbeHooks:
    """How screening extras change what the probe learns (`heads.screen.extras`); the
    defaults change nothing."""

    # (targets, weights, seed) -> step(x (N, D), t (N, K)) -> (x, t): fresh inputs before
    # every step (SRRS mixup).
    mix: Callable | None = None
    # (per (B,), logits (B, K), targets (B, K)) -> (B,) per-sample loss (partial labels).
    loss: Callable | None = None


@dataclass
class Probe:
    """A trained linear head on centred features (balanced, prior removed).

    `logits = unit(embed - center) @ weight.T + bias`.
    """

    weight: np.ndarray  # (K, D)
    bias: np.ndarray  # (K,)
    center: np.ndarray  # (D,)

    def predict_logits(self, embed: np.ndarray) -> np.ndarray:
        params = (torch.from_numpy(a) for a in (self.weight, self.bias, self.center))
        return probe_logits(float32_on(embed, torch.device("cpu")), *params).numpy()


def center_features(embed: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """(n, D) unit(embed - center): removes CLIP's shared direction (all images sit in a narrow
    cone, mean cosine ~0.5), which otherwise makes every class prototype look alike."""
    return torch.nn.functional.normalize(embed - center, dim=1, eps=1e-12)


def probe_logits(x: torch.Tensor, weight, bias, center) -> torch.Tensor:
    """(n, K) balanced logits of raw (n, D) embeddings, on the tensors' device."""
    with torch.no_grad():
        return (center_features(x, center) @ weight.T + bias).float()


def _loss(logits, targets, weights, loss_fn, hooks: ProbeHooks):
    per = loss_fn(logits, targets)  # (B,)
    if hooks.loss is not None:
        per = hooks.loss(per, logits, targets)
    return (per * weights).sum() / weights.sum().clamp_min(1e-6)


def train_probe(embed, targets, weights, *, cfg: ProbeConfig | None = None,
                device: str = "auto", seed: int = 0, hooks: ProbeHooks | None = None) -> Probe:  # fmt: skip
    """Train the probe on (N, D) embeddings, (N, K) soft targets and (N,) weights (arrays or
    tensors; the work runs on `device`)."""
    weight, bias, center = fit_probe(embed, targets, weights, cfg=cfg or ProbeConfig(),
                                     device=device, seed=seed, hooks=hooks)  # fmt: skip
    return Probe(*(a.detach().cpu().numpy().copy() for a in (weight, bias, center)))


def fit_probe(embed, targets, weights, *, cfg: ProbeConfig, device: str = "auto",
              seed: int = 0, hooks: ProbeHooks | None = None):  # fmt: skip
    """`train_probe`'s (weight (K, D), bias (K,), center (D,)) tensors, left on the device.

    Every (N, K) and (N, D) operation runs on the device: at 300k x 1500 the prototype
    product alone is ~0.5 TFLOP, seconds on the CPU of a GPU machine."""
    hooks = hooks or ProbeHooks()
    device = resolve_device(device)
    x, t, w = (float32_on(a, device) for a in (embed, targets, weights))
    if x.shape[0] != t.shape[0] or w.shape != (x.shape[0],):
        raise ValueError(f"shapes disagree: {tuple(x.shape)}, {tuple(t.shape)}, {tuple(w.shape)}")
    center = x.mean(0)  # (D,)
    x = center_features(x, center)
    mass = w @ t  # (K,)
    log_prior = torch.log((mass + 1e-3) / (mass + 1e-3).sum())
    weight = (class_prototypes(x, t, w) * INIT_SCALE).requires_grad_(True)  # (K, D)
    bias = torch.zeros(t.shape[1], device=device, requires_grad=True)
    adjust = cfg.logit_adjust * log_prior
    opt = torch.optim.Adam([weight, bias], lr=cfg.lr, weight_decay=WEIGHT_DECAY)
    gen = torch.Generator().manual_seed(seed)  # CPU draws: same batches on every device
    mix = hooks.mix(targets, weights, seed) if hooks.mix is not None else None
    loss_fn = make_loss(cfg.loss)
    x_all, t_all = x, t
    for _ in range(cfg.steps):
        if mix is not None:  # fresh partners and lam every step, as minibatch mixup
            x, t = mix(x_all, t_all)
        order = None
        if len(x) > BATCH_ROWS:
            order = torch.randperm(len(x), generator=gen).to(device)
        for start in range(0, len(x), BATCH_ROWS):
            rows = slice(start, start + BATCH_ROWS) if order is None else None
            rows = rows if rows is not None else order[start : start + BATCH_ROWS]
            logits = x[rows] @ weight.T + bias + adjust  # (B, K)
            loss = _loss(logits, t[rows], w[rows], loss_fn, hooks)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return weight.detach(), bias.detach(), center


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, K) float32 one-hot of (N,) labels; rows of label -1 stay zero."""
    out = np.empty((len(labels), num_classes), np.float32)
    out.fill(0.0)  # faster than np.zeros' lazy pages when every row is then written
    ok = labels >= 0
    out[np.flatnonzero(ok), labels[ok]] = 1.0
    return out


def fold_ids(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """(N,) fold of every sample, stratified by label so each fold sees every class it can."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]  # shuffled within each class
    ids = np.empty(len(labels), np.int64)
    ids[order] = np.arange(len(labels)) % folds
    return ids


def cross_fit_logits(
    train_fn: Callable,
    labels: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    *,
    folds: int,
    seed: int,
) -> np.ndarray:
    """(N, K) out-of-fold logits: fold f is scored by a model trained on the other folds.

    `train_fn(train_idx, targets, weights) -> predict_fn(idx) -> (m, K) logits`.
    """
    ids = fold_ids(labels, folds, seed)
    out = np.empty(targets.shape, np.float32)  # every row belongs to one fold
    # Each fold trains a model (a tail, in rounds >= 1): minutes on a CPU, so show progress.
    for fold in tqdm(range(folds), desc="cross-fit", unit="fold", leave=False, disable=None):
        held = np.flatnonzero(ids == fold)
        predict = train_fn(np.flatnonzero(ids != fold), targets, weights)
        out[held] = predict(held)
    return out


def probe_train_fn(embed: np.ndarray, cfg: ProbeConfig | None = None, *, device: str = "auto",
                   seed: int = 0, hooks: ProbeHooks | None = None) -> Callable:  # fmt: skip
    """The probe as a screening `train_fn` over a fixed (N, D) embedding matrix, which is
    moved to `device` once; each fold's model scores its rows there too."""
    cfg = cfg or ProbeConfig()
    on_device = float32_on(embed, resolve_device(device))  # (N, D)

    def train_fn(train_idx: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> Callable:
        keep = train_idx[weights[train_idx] > 0]
        rows = torch.from_numpy(keep).to(on_device.device)
        # Gathered by torch on the device: at 100k x 1500, 0.3 s against NumPy's 1.5-2.1 s
        # on the CPU (a 1.2 GB row gather per fold).
        t, w = (float32_on(a, on_device.device)[rows] for a in (targets, weights))
        params = fit_probe(on_device[rows], t, w, cfg=cfg, device=device, seed=seed, hooks=hooks)

        def predict(idx: np.ndarray) -> np.ndarray:
            held = on_device[torch.from_numpy(np.asarray(idx)).to(on_device.device)]
            return probe_logits(held, *params).cpu().numpy()

        return predict

    return train_fn
