"""Losses for noisy, long-tailed labels, registered by name; L2-SP and WiSE-FT.

    loss_fn = make_loss("gce", q=0.5)
    loss = weighted_loss(loss_fn, logits, targets, weights, log_prior, tau=1.0)

Notation: `N` samples, `K` classes. Every loss takes logits (N, K) and soft targets (N, K)
(rows sum to 1; one-hot for hard labels) and returns the per-sample loss (N,); the weighted
mean over samples is taken by `weighted_loss`, after the logit adjustment.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from engine.errors import UserError
from engine.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Factories `(**options) -> loss_fn`, registered by name (a duplicate name is refused).
LOSSES: Registry[Callable[..., LossFn]] = Registry("loss", error=UserError)
register_loss = LOSSES.register
# The one GCE exponent, `TrainConfig.gce_q`'s default (the screening probe had its own 0.7,
# the paper's CIFAR value, unused since the probe trains with CE): q -> 0 is CE (fits the
# noise), q = 1 is MAE (underfits 1000+ classes); 0.5 sits between.
GCE_Q = 0.5


def list_losses() -> list[str]:
    return LOSSES.names()


def make_loss(name: str, **options) -> LossFn:
    """Build the loss `name`; options a loss does not use are ignored."""
    return LOSSES.get(name)(**options)


def loss_from_config(cfg) -> LossFn:
    """The loss `cfg.loss`, each option of its factory taken from the config field
    `<loss>_<option>` when the config has one (`gce_q`, `sce_alpha`, `sce_beta`), else the
    factory's default: a newly registered loss needs no line here."""
    return make_loss(cfg.loss, **loss_options(cfg.loss, cfg))


def loss_options(name: str, cfg) -> dict:
    """{option: value} of the factory `name` read from `cfg`'s `<name>_<option>` fields."""
    factory = LOSSES.get(name)
    params = inspect.signature(factory).parameters.values()
    keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {p.name: getattr(cfg, f"{name}_{p.name}") for p in params
            if p.kind in keyword and hasattr(cfg, f"{name}_{p.name}")}  # fmt: skip


@register_loss("ce")
def _ce(**_) -> LossFn:
    """Cross-entropy with soft targets: -sum_k t_k log p_k."""

    def ce(logits, targets):
        return -(targets * F.log_softmax(logits, dim=-1)).sum(-1)  # (N,)

    return ce


@register_loss("gce")
def _gce(q: float = GCE_Q, **_) -> LossFn:
    """Generalized cross-entropy (Zhang & Sabuncu 2018): sum_k t_k (1 - p_k^q) / q."""

    def gce(logits, targets):
        p = F.softmax(logits.float(), dim=-1)  # (N, K)
        return (targets * (1.0 - p.clamp_min(1e-12) ** q)).sum(-1) / q

    return gce


@register_loss("sce")
def _sce(alpha: float = 1.0, beta: float = 1.0, **_) -> LossFn:
    """Symmetric cross-entropy (Wang et al. 2019): alpha CE + beta reverse CE.

    Reverse CE = -sum_k p_k log t_k, with log 0 clamped to log(1e-4) = -9.21 (the paper's
    A = -4 for its one-hot targets; the clamp keeps soft targets finite).
    """

    def sce(logits, targets):
        log_p = F.log_softmax(logits.float(), dim=-1)  # (N, K)
        ce = -(targets * log_p).sum(-1)
        rce = -(log_p.exp() * targets.clamp_min(1e-4).log()).sum(-1)
        return alpha * ce + beta * rce

    return sce


def adjust_logits(logits: torch.Tensor, log_prior: torch.Tensor, tau: float) -> torch.Tensor:
    """Logit adjustment (Menon et al. 2021): logits + tau * log prior, at train time only."""
    if tau == 0:
        return logits
    return logits + tau * log_prior.to(logits.dtype)  # (N, K)


def weighted_loss(
    loss_fn: LossFn,
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    log_prior: torch.Tensor,
    tau: float,
) -> torch.Tensor:
    """Weighted mean of the per-sample loss on the adjusted logits; weights need not sum to 1."""
    per_sample = loss_fn(adjust_logits(logits.float(), log_prior, tau), targets)  # (N,)
    return (weights * per_sample).sum() / weights.sum().clamp_min(1e-12)


def log_class_prior(targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """log of the weighted training class frequencies (K,), smoothed so no class is -inf."""
    return log_prior_of_counts((weights[:, None] * targets).sum(0))


def log_prior_of_counts(counts: torch.Tensor) -> torch.Tensor:
    """log of (K,) weighted class counts as frequencies, add-one smoothed (no class is -inf)."""
    counts = counts + 1.0
    return (counts / counts.sum()).log()


def l2sp_penalty(
    params: Iterable[torch.Tensor], anchors: Iterable[torch.Tensor], strength: float
) -> torch.Tensor:
    """L2-SP (Li et al. 2018): strength / 2 * sum ||theta - theta_0||^2; exactly 0 at init."""
    return L2SP(list(params), list(anchors), strength)()


class L2SP:
    """The L2-SP penalty of a fixed list of parameters as a handful of kernels per step: the
    parameters are viewed as one flat vector (one cat) against the anchors flattened once,
    instead of 3 kernels per parameter (a ViT-B/32 block has 12 parameters: 171 -> 417
    launches per tail step were measured with the per-parameter loop)."""

    def __init__(self, params: list[torch.Tensor], anchors: list[torch.Tensor], strength: float):
        if len(params) != len(anchors):
            raise ValueError(f"{len(params)} parameters but {len(anchors)} anchors")
        self.params = params
        self.strength = strength
        self.anchor = _flat(anchors).detach()  # (P,) float32

    def __call__(self) -> torch.Tensor:
        if not self.params:
            return torch.zeros(())
        diff = _flat(self.params) - self.anchor  # (P,)
        return 0.5 * self.strength * torch.dot(diff, diff)


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One float32 vector of all elements (a single cat; its backward is a single split)."""
    if not tensors:
        return torch.zeros(0)
    return torch.cat([t.reshape(-1) for t in tensors]).float()


@torch.no_grad()
def wise_ft(pretrained: dict, finetuned: dict, alpha: float) -> dict:
    """WiSE-FT (Wortsman et al. 2022): pretrained + alpha * (finetuned - pretrained).

    alpha = 0 and 1 return copies of the end points bit for bit (no arithmetic rounding).
    """
    if pretrained.keys() != finetuned.keys():
        raise ValueError("WiSE-FT needs two state dicts with the same keys")
    out = {}
    for name, p0 in pretrained.items():
        p1 = finetuned[name]
        if alpha == 0 or not torch.is_floating_point(p0):
            out[name] = p0.clone()
        elif alpha == 1:
            out[name] = p1.clone()
        else:
            out[name] = torch.lerp(p0.float(), p1.float(), alpha).to(p0.dtype)
    return out
