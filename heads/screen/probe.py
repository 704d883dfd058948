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

import numpy as np
import torch
from tqdm import tqdm

from heads.screen import lowconf
from heads.tensors import float32_on, resolve_device

LOSSES = ("ce", "gce")


@dataclass
class ProbeConfig:
    """How the probe trains; defaults measured on `bench.noisy_bench` (a few s on 2 CPU cores)."""

    # Full-batch Adam steps: the prototype init is close; more steps overfit noisy labels.
    steps: int = 30
    lr: float = 0.03
    # Cosine scale of the prototype init: makes the initial softmax as sharp as a trained one.
    init_scale: float = 16.0
    # Logit-adjustment strength tau: 1 is the Bayes-optimal value for a balanced test set.
    logit_adjust: float = 1.0
    # "ce" or "gce" (generalised CE, Zhang & Sabuncu 2018, robust to label noise).
    loss: str = "ce"
    gce_q: float = 0.7
    weight_decay: float = 1e-4
    # Rows per step: full batch below this size, minibatches (one epoch per step) above.
    batch_rows: int = 65536
    # SRRS mixup (`heads.screen.lowconf`): every step, each low-confidence sample (weight < 1
    # or soft target) is mixed with a random high-confidence one of its target class,
    # lam ~ Beta(a, a). None = off (see ScreenConfig.mixup_low_confidence).
    mixup_alpha: float | None = None
    # Rows uniform over 2+ classes (candidate-label targets) learn -log(sum of their
    # candidates' probabilities) instead of CE (see ScreenConfig.candidate_labels).
    partial_label: bool = False
    seed: int = 0
    # "auto" (CUDA when present), "cpu" or "cuda[:i]": where the probe trains. At 300k x 1500
    # one fold's full-batch step is ~1 TFLOP: seconds on a GPU, minutes on a CPU.
    device: str = "auto"

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"unknown probe loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        if self.steps < 0 or self.lr <= 0:
            raise ValueError(f"steps must be >= 0 and lr > 0, got {self.steps}, {self.lr}")
        if self.mixup_alpha is not None and self.mixup_alpha <= 0:
            raise ValueError(f"mixup_alpha must be > 0 or None, got {self.mixup_alpha}")


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


def prototypes(x: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(K, D) unit class means weighted by soft targets and sample weights (0 for empty)."""
    means = targets.T @ (x * weights[:, None])  # (K, D); no (N, K) temporary
    return torch.nn.functional.normalize(means, dim=1, eps=1e-12)


def _loss(logits, targets, weights, cfg: ProbeConfig):
    logp = torch.log_softmax(logits, dim=1)  # (B, K)
    if cfg.loss == "gce":
        per = (targets * (1 - logp.exp().clamp_min(1e-6) ** cfg.gce_q)).sum(1) / cfg.gce_q
    else:
        per = -(targets * logp).sum(1)
    if cfg.partial_label:
        pll = lowconf.candidate_rows(targets)  # (B,)
        per = torch.where(pll, lowconf.partial_label_loss(logp, targets), per)
    return (per * weights).sum() / weights.sum().clamp_min(1e-6)


def train_probe(embed, targets, weights, *, cfg: ProbeConfig | None = None) -> Probe:
    """Train the probe on (N, D) embeddings, (N, K) soft targets and (N,) weights (arrays or
    tensors; the work runs on `cfg.device`)."""
    cfg = cfg or ProbeConfig()
    weight, bias, center = fit_probe(embed, targets, weights, cfg=cfg)
    return Probe(*(a.detach().cpu().numpy().copy() for a in (weight, bias, center)))


def fit_probe(embed, targets, weights, *, cfg: ProbeConfig):
    """`train_probe`'s (weight (K, D), bias (K,), center (D,)) tensors, left on the device.

    Every (N, K) and (N, D) operation runs on the device: at 300k x 1500 the prototype
    product alone is ~0.5 TFLOP, seconds on the CPU of a GPU machine."""
    device = resolve_device(cfg.device)
    x, t, w = (float32_on(a, device) for a in (embed, targets, weights))
    if x.shape[0] != t.shape[0] or w.shape != (x.shape[0],):
        raise ValueError(f"shapes disagree: {tuple(x.shape)}, {tuple(t.shape)}, {tuple(w.shape)}")
    center = x.mean(0)  # (D,)
    x = center_features(x, center)
    mass = w @ t  # (K,)
    log_prior = torch.log((mass + 1e-3) / (mass + 1e-3).sum())
    weight = (prototypes(x, t, w) * cfg.init_scale).requires_grad_(True)  # (K, D)
    bias = torch.zeros(t.shape[1], device=device, requires_grad=True)
    adjust = cfg.logit_adjust * log_prior
    opt = torch.optim.Adam([weight, bias], lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)  # CPU draws: same batches on every device
    mixer = _Mixer(targets, weights, cfg) if cfg.mixup_alpha else None
    x_all, t_all = x, t
    for _ in range(cfg.steps):
        if mixer is not None:  # fresh partners and lam every step, as minibatch mixup
            x, t = mixer.mix(x_all, t_all)
        order = None
        if len(x) > cfg.batch_rows:
            order = torch.randperm(len(x), generator=gen).to(device)
        for start in range(0, len(x), cfg.batch_rows):
            rows = slice(start, start + cfg.batch_rows) if order is None else None
            rows = rows if rows is not None else order[start : start + cfg.batch_rows]
            logits = x[rows] @ weight.T + bias + adjust  # (B, K)
            loss = _loss(logits, t[rows], w[rows], cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return weight.detach(), bias.detach(), center


class _Mixer:
    """Draws SRRS mixup of low- with high-confidence rows for each probe step (seeded)."""

    def __init__(self, targets: np.ndarray, weights: np.ndarray, cfg: ProbeConfig):
        targets, weights = (
            a.cpu().numpy() if torch.is_tensor(a) else a for a in (targets, weights)
        )
        self.targets, self.weights, self.alpha = targets, weights, cfg.mixup_alpha
        self.rng = np.random.default_rng(cfg.seed + 1)

    def mix(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        partner = lowconf.mixup_partners(self.targets, self.weights, self.rng)  # (N,)
        low = np.flatnonzero(partner >= 0)
        lam = self.rng.beta(self.alpha, self.alpha, len(low)).astype(np.float32)  # (L,)
        low, partner, lam = (torch.from_numpy(a).to(x.device) for a in (low, partner[low], lam))
        return lowconf.mix_rows(x, t, low, partner, lam)


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


def probe_train_fn(embed: np.ndarray, cfg: ProbeConfig | None = None) -> Callable:
    """The probe as a screening `train_fn` over a fixed (N, D) embedding matrix, which is
    moved to the probe's device once; each fold's model scores its rows there too."""
    cfg = cfg or ProbeConfig()
    on_device = float32_on(embed, resolve_device(cfg.device))  # (N, D)

    def train_fn(train_idx: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> Callable:
        keep = train_idx[weights[train_idx] > 0]
        rows = torch.from_numpy(keep).to(on_device.device)
        # Gathered by torch on the device: at 100k x 1500, 0.3 s against NumPy's 1.5-2.1 s
        # on the CPU (a 1.2 GB row gather per fold).
        t, w = (float32_on(a, on_device.device)[rows] for a in (targets, weights))
        params = fit_probe(on_device[rows], t, w, cfg=cfg)

        def predict(idx: np.ndarray) -> np.ndarray:
            held = on_device[torch.from_numpy(np.asarray(idx)).to(on_device.device)]
            return probe_logits(held, *params).cpu().numpy()

        return predict

    return train_fn
