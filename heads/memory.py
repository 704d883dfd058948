"""Where a token table lives during training: GPU-resident, pinned host chunks, or streamed.

    plan = plan_tokens(300_000, 4, **free_capacities(device))   # gpu_free_bytes, host_...
    plan.where        # "gpu" | "pinned" | "stream"
    plan.reason       # one line for the log

A (V, N, 50, 768) fp16 table is N x V x 76.8 KB: 23 GB per view at 300k images, 184 GB at
V = 8. `plan_tokens` is pure (capacities come in as numbers, so tests fake any machine);
`free_capacities` reads the real ones. Decisions at 300k images (nominal 80 / 141 GB GPU
free, 120 GB of a 128 GB host available): 80 GB: V <= 2 GPU, V = 3 pinned, V >= 4 streamed;
141 GB: V <= 5 GPU, V >= 6 streamed.

- GPU: the table plus training's own memory (tail activations, LP features, targets, the
  optimizer: GPU_HEADROOM plus a tenth of the free memory) must fit. Memory torch has cached
  but not allocated counts as free: torch hands it out again before asking CUDA.
- Pinned host: torch's pinned allocator rounds every request up to a power of two (a 69 GB
  table would ask 137 GB), so the table is pinned in chunks of at most PIN_CHUNK_BYTES, each
  a whole number of rows just under the power of two (waste under one row per chunk). Page-
  locked memory cannot be swapped or reclaimed, so at most HOST_FRACTION of the available
  host memory is pinned.
- Streamed: batches are read from the store in the epoch's order by a background thread
  (prefetching a few batches), one pread per row of the uncompressed chunk files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

TOKEN_ROW = (50, 768)  # ViT-B/32: 7x7 patches + class token, width 768
GPU_HEADROOM = 8 * 2**30  # tail activations at batch 512 (~2 GB), (N, K) targets (1.8 GB at
# 300k x 1500), LP features, model and optimizer: measured needs are ~6 GB at 300k images
GPU_SHARE = 0.1  # and a tenth of free memory for fragmentation of the caching allocator
HOST_FRACTION = 0.7  # of MemAvailable that may be page-locked; the rest keeps the OS, page
# cache and the trainer's own host arrays (targets, embeddings, screening signals) alive
PIN_CHUNK_BYTES = 2**30  # pinned chunk size: a power of two, so rounding wastes < one row
PREFETCH_BATCHES = 4  # streamed batches read ahead: covers a slow read without much memory
WHERE = ("gpu", "pinned", "stream")


@dataclass(frozen=True)
class TokenPlan:
    """Where the tokens go and why.

    Attributes:
        where: "gpu" (one device tensor), "pinned" (host chunks, page-locked when `pin`) or
            "stream" (read from the store batch by batch).
        table_bytes: size of the (V, N, L, W) table.
        gpu_free_bytes, host_free_bytes: the capacities the decision was made from.
        chunk_rows: rows per host chunk ("pinned"), along the flattened (V * N) axis.
        pin: page-lock the host chunks (only with a CUDA device to copy to).
        prefetch: batches read ahead ("stream").
        reason: one line naming the sizes that decided.
    """

    where: str
    table_bytes: int
    gpu_free_bytes: int
    host_free_bytes: int
    chunk_rows: int
    pin: bool
    prefetch: int
    reason: str


def table_bytes(num_samples: int, views: int, token_shape=TOKEN_ROW, itemsize: int = 2) -> int:
    """Bytes of a (views, num_samples, *token_shape) table."""
    row = itemsize
    for size in token_shape:
        row *= size
    return num_samples * views * row


def plan_tokens(
    num_samples: int,
    views: int,
    *,
    gpu_free_bytes: int,
    host_free_bytes: int,
    cuda: bool = True,
    token_shape=TOKEN_ROW,
    itemsize: int = 2,
    force: str | None = None,
) -> TokenPlan:
    """Decide where a (views, num_samples, *token_shape) table of `itemsize` lives.

    Args:
        num_samples, views: the table's N and V.
        gpu_free_bytes: free GPU memory, torch's cached-but-unallocated memory included
            (0 without a GPU).
        host_free_bytes: host memory available (MemAvailable).
        cuda: whether training runs on a CUDA device (else the table stays in plain host
            memory, unpinned, or is streamed when even that does not fit).
        force: one of WHERE to override the decision (tests, benchmarks).
    """
    nbytes = table_bytes(num_samples, views, token_shape, itemsize)
    row_bytes = max(nbytes // max(num_samples * views, 1), 1)
    gpu_budget = int(gpu_free_bytes - GPU_HEADROOM - GPU_SHARE * gpu_free_bytes)
    host_budget = int(HOST_FRACTION * host_free_bytes)
    size = f"{views} x {num_samples:,} tokens = {nbytes / 1e9:.1f} GB"
    if cuda and nbytes <= gpu_budget:
        where, why = "gpu", f"{size} fit the GPU budget of {gpu_budget / 1e9:.1f} GB"
    elif nbytes <= host_budget:
        on = f"GPU budget {max(gpu_budget, 0) / 1e9:.1f} GB" if cuda else "CPU training"
        where, why = "pinned", f"{size} > {on}; host budget {host_budget / 1e9:.1f} GB holds it"
    else:
        where = "stream"
        why = (
            f"{size} exceed the GPU budget ({max(gpu_budget, 0) / 1e9:.1f} GB) and the host "
            f"budget ({host_budget / 1e9:.1f} GB): streamed from the store"
        )
    if force is not None:
        if force not in WHERE:
            raise ValueError(f"force must be one of {WHERE}, got {force!r}")
        where, why = force, f"{size}: {force} (forced)"
    chunk_rows = max(PIN_CHUNK_BYTES // row_bytes, 1) if cuda else max(num_samples * views, 1)
    return TokenPlan(
        where=where,
        table_bytes=nbytes,
        gpu_free_bytes=int(gpu_free_bytes),
        host_free_bytes=int(host_free_bytes),
        chunk_rows=int(chunk_rows),
        pin=cuda and where == "pinned",
        prefetch=PREFETCH_BATCHES,
        reason=why,
    )


def host_available_bytes(meminfo: Path = Path("/proc/meminfo")) -> int:
    """MemAvailable (Linux), else total physical memory, else 0."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def gpu_free_bytes(device) -> int:
    """Free memory of a CUDA device as torch can use it: CUDA's free memory plus what torch's
    caching allocator holds reserved but unallocated (0 for a non-CUDA device)."""

    device = torch.device(device)
    if device.type != "cuda":
        return 0
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free + cached)


def free_capacities(device) -> dict:
    """`plan_tokens`' capacity keywords for `device` on this machine."""

    return {
        "gpu_free_bytes": gpu_free_bytes(device),
        "host_free_bytes": host_available_bytes(),
        "cuda": torch.device(device).type == "cuda",
    }
