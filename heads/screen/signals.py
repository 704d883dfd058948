"""Per-sample evidence that a given label is right, one small function per signal.

    nbr_idx, nbr_sim = nearest_neighbours(embed, k=10)
    votes = knn_label_votes(nbr_idx, nbr_sim, labels, num_classes=K)      # (N, K)
    agree = given_label_score(votes, labels)                               # (N,)

Notation (as in cleanlab): N samples, K classes, D embedding width; `labels` (N,) int with
values in [0, K); `embed` (N, D) L2-normalised float32; probability-like matrices are (N, K)
with rows summing to 1. NumPy in, NumPy out; options are keyword-only; inputs are validated
before any work. Every signal is computed without the model being fine-tuned (SRRS: a judge
that is not the student), except `model_probs`, which rounds >= 1 feed with cross-fitted logits.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from heads.classes import class_prototypes, class_ranks
from heads.tensors import float32_on, resolve_device
from shards.cpus import available_cpus

log = logging.getLogger(__name__)

# Rows per block of an (N, K) pass: 4096 x 1500 float32 is 24 MB, so each pass stays in cache.
_BLOCK_ROWS = 4096
# Softmax temperature of neighbour weights: cosines of CLIP neighbours differ by ~0.05.
KNN_TEMPERATURE = 0.05


def _check(embed: np.ndarray | None, labels: np.ndarray, num_classes: int | None = None) -> None:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-d integer array, got {labels.dtype} {labels.shape}")
    if embed is not None and (embed.ndim != 2 or embed.shape[0] != len(labels)):
        raise ValueError(f"embed must be (N, D) with N={len(labels)}, got {embed.shape}")
    if (
        num_classes is not None
        and len(labels)
        and (labels.min() < 0 or labels.max() >= num_classes)
    ):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}"
        )


def for_row_blocks(fn, num_rows: int) -> None:
    """Call `fn(rows)` for blocks of rows on all cores (NumPy releases the GIL in its loops):
    at 300k x 1500 one (N, K) pass is 1.8 GB, seconds on one core."""
    blocks = [slice(lo, lo + _BLOCK_ROWS) for lo in range(0, num_rows, _BLOCK_ROWS)]
    with ThreadPoolExecutor(max(1, min(len(blocks), available_cpus()))) as pool:
        list(pool.map(fn, blocks))  # list(): re-raise the first error of any block


def softmax(logits: np.ndarray, *, temperature: float = 1.0) -> np.ndarray:
    """Row softmax of (N, K) logits, float32, numerically stable."""
    logits = np.asarray(logits, np.float32)
    out = np.empty(logits.shape, np.float32)

    def block(rows):
        z = logits[rows] / temperature
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        out[rows] = z / z.sum(axis=1, keepdims=True)

    for_row_blocks(block, len(logits))
    return out


def row_argmax(a: np.ndarray) -> np.ndarray:
    """(N,) argmax of every row of an (N, K) array, row blocks on all cores."""
    out = np.empty(len(a), np.int64)

    def block(rows):
        out[rows] = a[rows].argmax(1)

    for_row_blocks(block, len(a))
    return out


def best_other_class(probs: np.ndarray, labels: np.ndarray):
    """For every row of an (N, K) distribution: the best class other than the given label,
    its probability, and the row's top probability over all classes; (N,) each, computed in
    row blocks on all cores (no (N, K) copy: 1.8 GB at 300k x 1500)."""
    _check(None, labels, probs.shape[1])
    best = np.empty(len(labels), np.int64)
    best_p, top_p = np.empty(len(labels), np.float32), np.empty(len(labels), np.float32)

    def block(rows):
        part = np.array(probs[rows], np.float32, copy=True)
        top_p[rows] = part.max(1)
        part[np.arange(len(part)), labels[rows]] = -1.0
        best[rows] = part.argmax(1)
        best_p[rows] = part[np.arange(len(part)), best[rows]]

    for_row_blocks(block, len(labels))
    return best, best_p, top_p


def nearest_neighbours(
    embed: np.ndarray, *, k: int = 10, block: int = 8192, device: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by cosine similarity, excluding the sample itself.

    On a CUDA `device` ("auto" picks CUDA when present): blocked matrix products in torch
    (300k x 300k x 512 is ~90 TFLOP: seconds on an H100, minutes for faiss on a CPU). On the
    CPU: faiss `IndexFlatIP` (exact inner product) when installed, else the same torch
    products. Returns (N, k) int64 indices and (N, k) float32 similarities, most similar first.
    """
    embed = np.ascontiguousarray(embed, dtype=np.float32)
    if embed.ndim != 2 or not 0 < k < len(embed):
        raise ValueError(f"need (N, D) embed with 0 < k < N; got {embed.shape} and k={k}")
    where = resolve_device(device)
    try:
        import faiss  # deferred: optional, ImportError-guarded
    except ImportError:
        faiss = None
    if faiss is not None and where.type == "cpu":
        index = faiss.IndexFlatIP(embed.shape[1])
        index.add(embed)
        sim, idx = index.search(embed, k + 1)
    else:
        sim, idx = _torch_knn(embed, k + 1, block, where)
    return _drop_self(idx.astype(np.int64), sim.astype(np.float32), k)


def _torch_knn(embed: np.ndarray, k: int, block: int, device) -> tuple[np.ndarray, np.ndarray]:
    base = torch.from_numpy(embed).to(device)  # (N, D)
    block = min(block, max(256, (1 << 29) // len(base)))  # a (block, N) similarity <= 2 GB
    sims, idxs = [], []
    for start in range(0, len(base), block):
        s, i = (base[start : start + block] @ base.T).topk(k, dim=1)  # (B, k)
        sims.append(s.cpu().numpy())
        idxs.append(i.cpu().numpy())
    return np.concatenate(sims), np.concatenate(idxs)


def _drop_self(idx: np.ndarray, sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index (ties with duplicates may put it anywhere), keep k."""
    rows = np.arange(len(idx))[:, None]
    is_self = idx == rows
    # Rows where self was not returned (exact duplicates) lose their last neighbour instead.
    is_self[~is_self.any(1), -1] = True
    keep = ~is_self
    return idx[keep].reshape(len(idx), k), sim[keep].reshape(len(idx), k)


def knn_label_votes(
    nbr_idx: np.ndarray,
    nbr_sim: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    temperature: float = KNN_TEMPERATURE,
    device: str = "auto",
) -> np.ndarray:
    """(N, K) similarity-weighted label distribution of each sample's neighbours.

    Weights `exp(sim / temperature)` let close neighbours dominate (DINO-style kNN); the result
    doubles as NeaR's neighbour label refinement target. Built on `device`: one neighbour rank
    at a time, so no two writes hit the same cell (deterministic on CUDA, unlike scatter_add).
    """
    _check(None, labels, num_classes)
    if nbr_idx.shape != nbr_sim.shape or len(nbr_idx) != len(labels):
        raise ValueError(f"neighbour arrays {nbr_idx.shape}, {nbr_sim.shape} must be (N, k)")
    where = resolve_device(device)
    sim = float32_on(nbr_sim, where)
    w = torch.exp((sim - sim[:, :1]) / temperature)  # (N, k), <= 1, stable
    nbr_labels = torch.from_numpy(np.asarray(labels)[nbr_idx]).to(where)  # (N, k)
    votes = torch.zeros((len(labels), num_classes), dtype=torch.float32, device=where)
    rows = torch.arange(len(labels), device=where)
    for j in range(nbr_labels.shape[1]):
        votes[rows, nbr_labels[:, j]] += w[:, j]
    return (votes / votes.sum(1, keepdim=True)).cpu().numpy()


def given_label_score(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) the column of the given label: agreement of an (N, K) distribution with it."""
    _check(None, labels, probs.shape[1])
    return probs[np.arange(len(labels)), labels].astype(np.float32)


def robust_prototypes(
    embed: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    trim: float = 0.3,
    device: str = "auto",
) -> np.ndarray:
    """(K, D) unit class means after dropping each class's `trim` share farthest from its mean.

    A trimmed mean resists the noisy members of a class (they sit far from its mode). A class
    keeps at least one sample; classes without samples get a zero row. Sums run on `device`.
    """
    _check(embed, labels, num_classes)
    if not 0 <= trim < 1:
        raise ValueError(f"trim must be in [0, 1), got {trim}")
    where = resolve_device(device)
    x, y = float32_on(embed, where), torch.from_numpy(np.asarray(labels, np.int64)).to(where)
    first = class_prototypes(x, y, num_classes=num_classes)  # (K, D)
    sim = (x * first[y]).sum(1).cpu().numpy()  # (N,)
    _, rank = class_ranks(-sim, labels, num_classes)  # 0 = most central of its class
    counts = np.bincount(labels, minlength=num_classes)
    keep = rank < np.maximum(1, np.ceil(counts * (1 - trim)))[labels]
    kept = torch.from_numpy(np.flatnonzero(keep)).to(where)
    return class_prototypes(x[kept], y[kept], num_classes=num_classes).cpu().numpy()


def prototype_scores(
    embed: np.ndarray, labels: np.ndarray, protos: np.ndarray, *, device: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """(N,) cosine to the given class's prototype minus the best other prototype's cosine,
    and (N,) the nearest prototype's class; row blocks on `device` (no (N, K) matrix kept)."""
    _check(embed, labels, len(protos))
    where = resolve_device(device)
    x, p = float32_on(embed, where), float32_on(protos, where)
    y = torch.from_numpy(np.asarray(labels, np.int64)).to(where)
    margin, nearest = np.empty(len(labels), np.float32), np.empty(len(labels), np.int64)
    for lo in range(0, len(labels), _BLOCK_ROWS * 4):
        rows = slice(lo, lo + _BLOCK_ROWS * 4)
        sims = x[rows] @ p.T  # (B, K)
        nearest[rows] = sims.argmax(1).cpu().numpy()
        own = sims.gather(1, y[rows, None])[:, 0]
        sims.scatter_(1, y[rows, None], -torch.inf)
        margin[rows] = (own - sims.max(1).values).cpu().numpy()
    return margin, nearest


def zero_shot_probs(
    embed: np.ndarray, text_embed: np.ndarray, *, temperature: float = 0.01, device: str = "auto"
) -> np.ndarray:
    """(N, K) softmax of cosine to the class text embeddings (CLIP's logit scale is 100),
    computed in row blocks on `device`."""
    if embed.ndim != 2 or text_embed.ndim != 2 or embed.shape[1] != text_embed.shape[1]:
        raise ValueError(f"embed {embed.shape} and text_embed {text_embed.shape} must share D")
    where = resolve_device(device)
    x, text = float32_on(embed, where), float32_on(text_embed, where)
    out = np.empty((len(embed), len(text_embed)), np.float32)
    for lo in range(0, len(embed), _BLOCK_ROWS * 4):
        logits = x[lo : lo + _BLOCK_ROWS * 4] @ text.T / temperature
        out[lo : lo + _BLOCK_ROWS * 4] = torch.softmax(logits, dim=1).cpu().numpy()
    return out


_TEMPERATURES = tuple(float(t) for t in np.geomspace(0.003, 1.0, 25))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, grid=_TEMPERATURES) -> float:
    """Softmax temperature (from `grid`) minimising the mean NLL of the given labels.

    Calibrates a signal that is not trained on these labels (zero-shot: CLIP's logit scale
    100 makes it sure of itself even when it is right on 40% of species). Noisy labels move the
    optimum only mildly: one scalar is fitted on all N samples, and no noise rate is needed.
    """
    _check(None, labels, logits.shape[1])
    rows = np.arange(len(labels))
    best, best_nll = grid[0], np.inf
    for t in grid:
        z = np.asarray(logits, np.float32) / t
        z -= z.max(1, keepdims=True)
        nll = float((np.log(np.exp(z).sum(1)) - z[rows, labels]).mean())
        if nll < best_nll:
            best, best_nll = float(t), nll
    return best


def model_probs(logits: np.ndarray) -> np.ndarray:
    """(N, K) probabilities from cross-fitted, balanced (logit-adjusted) model logits."""
    return softmax(logits)


def cross_entropy(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) loss signal -log p(given label); large for samples the model cannot fit."""
    return -np.log(np.maximum(given_label_score(probs, labels), 1e-12))
