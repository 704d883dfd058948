"""Folder-as-mixture EM: name the true class of every sample by treating each folder as a
mixture of true classes (issue 18).

    fit = fit_folder_mixture(embed, labels, K, seed_mask=state == CLEAN, background=b)
    fit.resp (N, K), fit.background (N,), fit.composition (K, K), fit.prior (K,)

Model. A sample filed in folder y is, with a FIXED per-sample weight b (the screening's
out-of-set signal), from a background component, else from true class c with probability

    rho(c | y) = (1 - a(y)) * rho_s(c | y) + a(y) * prior(c)

where rho_s lives on a support (y itself and its `neighbours` nearest class means: the
confusable siblings) and the catch-all a(y) spreads over every class by the ESTIMATED
true-class prior (folders are long-tailed, so a uniform prior would push flips into the
tail). The background's density is the prior-predictive sum_c prior(c) p(x | c): a sample
that looks like something but is not explained by its folder's composition goes there in
proportion to b, so the out-of-set signal acts where the folder cannot account for a sample.
Each class is a mixture of up to M Gaussians (its sub-means mu_cm, weights pi_cm; how many per
class: `heads.screen.modes`) with one shared covariance, so each sub-mean's log-likelihood is
linear in x: x @ (Sigma^-1 mu_cm) - mu_cm Sigma^-1 mu_cm / 2 + a term of x alone, and a
class's is their logsumexp with log pi_cm. With one mean per class (`modes=1`) the EM lost up
to 6 points on classes with sub-types (bench/NOISY.md): one mean sits between them.

EM. The E-step gives responsibilities r(i, c); the M-step re-estimates the class means from
ALL responsibilities, so the images of a tail class hidden in other folders pull its mean
toward them (what the oracle has and screening cannot give back), each sub-mean from its
own share of them, then the shared covariance, the prior, rho_s and a(y). Tail prior: every
class mean is pulled toward an anchor (the class's text embedding mapped into image space
when given, else its seed prototype) with the weight of `tail_strength` samples, which
matters only for classes with few samples; each sub-mean is pulled toward its class mean
with the same weight.

Cost per iteration (N samples, D dims, K classes, M sub-mean slots per class): 4 N D K M FLOP
for the two (N, D) x (D, K M) products, 2 N D^2 for the covariance statistics, ~2 N K M
exponentials; at 300k x 512 x 1500 x 4 that is 3.7 + 0.16 TFLOP, so 16 passes (15 iterations
and the final E-step) ~62 TFLOP (17 with one mean per class); the start adds one whitening
(2 N D^2) and a small k-means per class. `fit_folder_mixture` runs in row blocks with torch
(GPU when given); `fit_folder_mixture_reference` is the dense NumPy float64 version tests
compare to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from heads.screen.mixture_math import (
    MixtureOptions,
    MixtureStats,
    initial_state,
    m_step,
    text_anchors,
)

__all__ = ["MixtureFit", "MixtureOptions", "fit_folder_mixture", "fit_folder_mixture_reference"]


@dataclass
class MixtureFit:
    """resp (N, K) class responsibilities (rows sum to 1 - background); background (N,) the
    background component's responsibility; composition (K, K) rho(c | folder) per folder row;
    prior (K,) estimated true-class prior; means (K, D) class means (centred space); modes
    (K,) sub-means of each class (`heads.screen.modes`)."""

    resp: np.ndarray
    background: np.ndarray
    composition: np.ndarray
    prior: np.ndarray
    means: np.ndarray
    modes: np.ndarray


def _prepare(embed, labels, num_classes, seed_mask, background, text_embed, opts):
    """Centred float64 embeddings, the EM's initial state and the background log-weights."""
    x = np.asarray(embed, np.float64)
    centre = x.mean(0)
    x = x - centre
    anchors = None
    if text_embed is not None:
        anchors = text_anchors(x, labels, seed_mask, np.asarray(text_embed, np.float64) - centre)
    state = initial_state(x, labels, num_classes, seed_mask, anchors, opts)
    b = np.clip(np.asarray(background, np.float64), 1e-6, 1 - 1e-6)
    return x, state, np.log(b), np.log1p(-b)


def _finish(resp, bg, state) -> MixtureFit:
    return MixtureFit(resp.astype(np.float32), bg.astype(np.float32),
                      state.composition().astype(np.float32), state.prior.astype(np.float32),
                      state.means.astype(np.float32), state.used.sum(1))  # fmt: skip


def fit_folder_mixture_reference(embed, labels, num_classes, *, seed_mask, background,
                                 text_embed=None, consensus=None,
                                 opts: MixtureOptions | None = None) -> MixtureFit:  # fmt: skip
    """Dense NumPy float64 EM (the reference; the torch version must match it)."""
    opts = opts or MixtureOptions()
    x, state, log_b, log_nb = _prepare(embed, labels, num_classes, seed_mask, background,
                                       text_embed, opts)  # fmt: skip
    log_cons = None if consensus is None else np.log(np.asarray(consensus, np.float64) + 1e-6)
    n, k = len(x), num_classes
    for it in range(opts.iters + 1):
        w, bias = state.linear()
        comp = ((x @ w.T + bias) / opts.gaussian_temperature).reshape(n, k, -1) + state.mode_logw
        gauss = _logsumexp(comp, 2)  # (N, K), up to a term of x alone
        like = gauss if log_cons is None else gauss + opts.consensus_weight * log_cons
        logit = like + np.log(state.composition())[labels] + log_nb[:, None]
        bg_logit = log_b + _logsumexp(like + np.log(state.prior), 1)
        full = np.concatenate([logit, bg_logit[:, None]], 1)
        full = np.exp(full - full.max(1, keepdims=True))
        full /= full.sum(1, keepdims=True)
        resp, r_bg = full[:, :-1], full[:, -1]
        if it == opts.iters:
            return _finish(resp, r_bg, state)
        mode_resp = resp[:, :, None] * np.exp(comp - gauss[:, :, None])  # (N, K, M)
        stats = MixtureStats(mode_resp.sum(0), (mode_resp.reshape(n, -1).T @ x).reshape(k, -1, x.shape[1]),
                             (x * (1 - r_bg)[:, None]).T @ x,
                             _folder_sums(resp, labels, num_classes))  # fmt: skip
        state = m_step(state, stats, opts)


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = a.max(axis, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(axis, keepdims=True))).squeeze(axis)


def _folder_sums(resp: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) sum of responsibilities over the samples of each folder."""
    out = np.zeros((num_classes, resp.shape[1]))
    np.add.at(out, labels, resp)
    return out


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def fit_folder_mixture(embed, labels, num_classes, *, seed_mask, background, text_embed=None,
                       consensus=None, opts: MixtureOptions | None = None,
                       device: str = "auto") -> MixtureFit:  # fmt: skip
    """The EM of this module in row blocks of `opts.block_rows` with torch float32 on
    `device` (the per-iteration (K, K), (K, D), (D, D) parameters in float64 NumPy)."""
    opts = opts or MixtureOptions()
    dev = _device(device)
    x64, state, log_b, log_nb = _prepare(embed, labels, num_classes, seed_mask, background,
                                         text_embed, opts)  # fmt: skip
    x = torch.as_tensor(x64, dtype=torch.float32, device=dev)
    y = torch.as_tensor(np.asarray(labels, np.int64), device=dev)
    lb = torch.as_tensor(log_b, dtype=torch.float32, device=dev)
    lnb = torch.as_tensor(log_nb, dtype=torch.float32, device=dev)
    cons = None if consensus is None else np.asarray(consensus)
    for it in range(opts.iters + 1):
        last = it == opts.iters
        params = _torch_params(state, dev)
        out = _torch_pass(x, y, lb, lnb, cons, params, opts, num_classes, keep=last)
        if last:
            return _finish(out[0], out[1], state)
        state = m_step(state, out, opts)


def _torch_params(state, dev) -> dict:
    w, bias = state.linear()
    f32 = dict(dtype=torch.float32, device=dev)
    return {"w": torch.as_tensor(w.T, **f32), "bias": torch.as_tensor(bias, **f32),
            "log_w": torch.as_tensor(state.mode_logw, **f32),
            "log_rho": torch.as_tensor(np.log(state.composition()), **f32),
            "log_prior": torch.as_tensor(np.log(state.prior), **f32)}  # fmt: skip


def _torch_pass(x, y, lb, lnb, cons, p, opts, num_classes, keep: bool):
    """One E-step over row blocks: MixtureStats, or (resp, background) when `keep`."""
    n, d = x.shape
    k, m = p["log_w"].shape
    f64 = dict(dtype=torch.float64, device=x.device)
    rsum, rx = torch.zeros(k * m, **f64), torch.zeros(k * m, d, **f64)
    xx, folders = torch.zeros(d, d, **f64), torch.zeros(num_classes, num_classes, **f64)
    resp_out = np.empty((n, num_classes), np.float32) if keep else None
    bg_out = np.empty(n, np.float32) if keep else None
    for lo in range(0, n, opts.block_rows):
        rows = slice(lo, min(lo + opts.block_rows, n))
        xb, yb = x[rows], y[rows]
        comp = ((xb @ p["w"] + p["bias"]) / opts.gaussian_temperature).view(-1, k, m)
        comp = comp + p["log_w"]
        gauss = torch.logsumexp(comp, 2)  # (B, K)
        like = gauss
        if cons is not None:
            cb = torch.as_tensor(cons[rows], dtype=torch.float32, device=x.device)
            like = gauss + opts.consensus_weight * torch.log(cb + 1e-6)
        logit = like + p["log_rho"][yb] + lnb[rows, None]
        bg_logit = lb[rows] + torch.logsumexp(like + p["log_prior"], 1)
        full = torch.softmax(torch.cat([logit, bg_logit[:, None]], 1), 1)
        resp, r_bg = full[:, :-1], full[:, -1]
        if keep:
            resp_out[rows], bg_out[rows] = resp.cpu().numpy(), r_bg.cpu().numpy()
            continue
        mode_resp = (resp[:, :, None] * torch.exp(comp - gauss[:, :, None])).view(-1, k * m)
        rsum += mode_resp.sum(0).double()
        rx += (mode_resp.T @ xb).double()
        xx += ((xb * (1 - r_bg)[:, None]).T @ xb).double()
        folders.index_add_(0, yb, resp.double())
    if keep:
        return resp_out, bg_out
    rsum, rx = rsum.view(k, m), rx.view(k, m, d)
    return MixtureStats(*(t.cpu().numpy() for t in (rsum, rx, xx, folders)))
