"""Moving cached features to where training reads them, and batch gathering without Python loops.

    tokens = load_tokens(data.tokens, rows, views=2, device=dev)   # (V, n, L, W) fp16
    x = gather_views(tokens, view_of, rows_in_batch, device=dev)   # (B, L, W)

Placement: on the GPU when the tokens fit in 70% of its free memory (no copies per step),
else in pinned host memory, gathered into a pinned buffer and copied with non_blocking=True.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm import tqdm

log = logging.getLogger(__name__)

# Rows read per Zarr slice: a few hundred MB of tokens, a multiple of usual chunk sizes.
READ_BLOCK = 4096


def resolve_device(name: str) -> torch.device:
    """ "auto", "cpu", "cuda" or "cuda:N" -> a device; CUDA always with its index.

    torch.device("cuda") != torch.device("cuda:0"), while every tensor placed on it reports
    cuda:0, so an index-less device would make `same_device` checks fail on the GPU.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def float32_on(a, device: torch.device) -> torch.Tensor:
    """float32 tensor of an array or tensor on `device` (no copy for float32 already there)."""
    if torch.is_tensor(a):
        return a.to(device=device, dtype=torch.float32)
    return torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(device)


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are the same, "cuda" meaning the current CUDA device."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type != "cuda" or a.index == b.index:
        return True
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


def read_rows(array, view: int | None, rows: np.ndarray, block: int = READ_BLOCK) -> np.ndarray:
    """array[view, rows] (or array[rows] when view is None) read in contiguous blocks.

    Zarr reads whole chunks anyway, so contiguous slices of the covering range are cheaper
    than fancy indexing; rows may be in any order and repeat.
    """
    rows = np.asarray(rows, dtype=np.int64)
    shape = array.shape[1:] if view is None else array.shape[2:]
    out = np.empty((len(rows), *shape), dtype=array.dtype)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    n = array.shape[0] if view is None else array.shape[1]
    for lo in range(0, n, block):
        a, b = np.searchsorted(sorted_rows, [lo, lo + block])
        if a == b:
            continue
        hi = int(sorted_rows[b - 1]) + 1
        start = int(sorted_rows[a])
        chunk = array[start:hi] if view is None else array[view, start:hi]
        out[order[a:b]] = np.asarray(chunk)[sorted_rows[a:b] - start]
    return out


def _fits_on(device: torch.device, nbytes: int) -> bool:
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes < 0.7 * free


def load_tokens(tokens, rows: np.ndarray, views: int, device: torch.device) -> torch.Tensor:
    """(views, n, L, W) float16 tensor of the selected rows, placed for fast batch gathers."""
    n = len(rows)
    shape = (views, n, *tokens.shape[2:])
    nbytes = int(np.prod(shape)) * 2
    on_device = _fits_on(device, nbytes)
    # Filled view by view where it will live: a GPU table never has a second full host copy.
    out = torch.empty(
        shape,
        dtype=torch.float16,
        device=device if on_device else "cpu",
        pin_memory=device.type == "cuda" and not on_device,
    )
    for v in tqdm(range(views), desc="load tokens", disable=views * n < 50_000):
        out[v] = torch.from_numpy(read_rows(tokens, v, rows).astype(np.float16, copy=False))
    log.info(
        "tokens %s (%.2f GB) in %s", tuple(shape), nbytes / 1e9, "GPU" if on_device else "host"
    )
    return out


def gather_views(
    table: torch.Tensor, view_of: torch.Tensor, rows: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """table[view_of[rows], rows] as one index_select on the flattened (V*n, ...) table."""
    views, n = table.shape[:2]
    flat = table.reshape(views * n, *table.shape[2:])
    index = view_of[rows] * n + rows  # (B,)
    if same_device(flat.device, device):
        return flat.index_select(0, index.to(device))
    out = torch.empty((len(index), *flat.shape[1:]), dtype=flat.dtype, pin_memory=flat.is_pinned())
    torch.index_select(flat, 0, index.cpu(), out=out)
    return out.to(device, non_blocking=True)


def autocast(device: torch.device):
    """bf16 autocast on the GPU; a no-op context on the CPU (fp32 there: bf16 matmuls are slow)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def fp32(device: torch.device):
    """Autocast switched off: the head's (N, D) x (D, K) matmul is cheap, and in bf16 its
    cosines would carry ~3e-3 error, ~0.06 per logit at temperature 0.05."""
    return torch.autocast(device.type, enabled=False)


@torch.no_grad()
def map_chunks(
    fn,
    table: torch.Tensor,
    device: torch.device,
    out_dtype: torch.dtype = torch.float32,
    chunk: int = 1024,
    inplace: bool = False,
) -> torch.Tensor:
    """fn over (V, n, ...) in row chunks, computed on `device`; the result stays where `table` is.

    On the CPU fn sees float32 (fp16 CPU kernels are slow); on the GPU it runs under bf16 autocast.
    `inplace` writes the results over `table` (fn must keep the shape, `out_dtype` must be the
    table's): a token table that fills most of the GPU cannot be held twice.
    """
    views, n = table.shape[:2]
    out = table if inplace else None
    if inplace and out_dtype != table.dtype:
        raise ValueError(f"inplace needs out_dtype == table dtype ({table.dtype}), got {out_dtype}")
    for v in range(views):
        for lo in range(0, n, chunk):
            x = table[v, lo : lo + chunk].to(device, non_blocking=True)
            x = x.float() if device.type == "cpu" else x
            with autocast(device):
                y = fn(x)
            if out is None:
                out = torch.empty((views, n, *y.shape[1:]), dtype=out_dtype, device=table.device)
            out[v, lo : lo + len(y)] = y.to(out.device, out_dtype)
    return out
