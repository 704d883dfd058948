"""Moving cached features to where training reads them, and batch gathering without Python loops.

    tokens = load_tokens(data.tokens, rows, views=2, device=dev)   # (V, n, L, W) fp16
    x = gather_views(tokens, view_of, rows_in_batch, device=dev)   # (B, L, W)

Placement follows `heads.memory.plan_tokens`: one tensor on the GPU when it fits beside
training's own memory (no copies per step); else host memory in chunks (page-locked on a CUDA
machine), gathered into a pinned buffer and copied with non_blocking=True; else streamed from
the store batch by batch (`heads.token_tables.StreamedTokens`). A token table is therefore a
tensor, a `HostChunks` or a `StreamedTokens`; `gather_views`, `map_chunks`, `begin_epoch` and
`advance_table` accept all three. Loading reads the store block by block straight into the
table's memory (uncompressed stores by pread, others through a bounded temporary).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm import tqdm

from features.chunkio import RawChunks
from heads import memory
from heads.token_tables import HostChunks, StreamedTokens

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


def _read_into(tokens, raw: RawChunks | None, view: int, rows: np.ndarray, out: np.ndarray):
    """out[:] = tokens[view, rows], read into `out` itself where the store allows it."""
    if raw is not None:
        raw.read_rows(view, rows, out)
    else:
        out[:] = read_rows(tokens, view, rows)  # a temporary of at most READ_BLOCK rows


def plan_for(tokens, num_samples: int, views: int, device: torch.device) -> memory.TokenPlan:
    """The placement plan of a (views, num_samples) table of `tokens` rows on this machine."""
    caps = memory.free_capacities(device)
    return memory.plan_tokens(num_samples, views, token_shape=tuple(tokens.shape[2:]), **caps)


def load_tokens(tokens, rows: np.ndarray, views: int, device: torch.device):
    """(views, n, L, W) float16 token table of the selected rows, placed by `plan_for`.

    Returns a tensor (on the GPU, or in host memory when it is one chunk), a `HostChunks` or
    a `StreamedTokens`.
    """
    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)
    shape = (views, n, *tokens.shape[2:])
    plan = plan_for(tokens, n, views, device)
    log.info("tokens %s: %s", tuple(shape), plan.reason)
    if plan.where == "stream":
        return StreamedTokens(tokens, rows, views, prefetch=plan.prefetch)
    raw = RawChunks.of(tokens)
    if plan.where == "gpu":
        return _load_on_gpu(tokens, raw, rows, shape, device)
    table = HostChunks.allocate(shape, plan.chunk_rows, pin=plan.pin)
    for c in tqdm(range(len(table.chunks)), desc="load tokens", disable=views * n < 50_000):
        # each chunk straight from the store: no temporary beyond READ_BLOCK rows
        for v, lo, piece in table.chunk_pieces(c, READ_BLOCK):
            _read_into(tokens, raw, v, rows[lo : lo + len(piece)], piece.numpy())
    if len(table.chunks) == 1:
        return table.chunks[0].view(shape)  # one plain tensor: nothing to split
    return table


def _load_on_gpu(tokens, raw, rows: np.ndarray, shape, device) -> torch.Tensor:
    """Filled block by block through two reused pinned staging buffers (the disk fills one
    while the other is copied): a GPU table never has a host copy of a whole view."""
    out = torch.empty(shape, dtype=torch.float16, device=device)
    staging = [
        torch.empty((READ_BLOCK, *shape[2:]), dtype=torch.float16, pin_memory=True)
        for _ in range(2)
    ]
    copied: list = [None, None]  # CUDA event per buffer: its last copy has finished
    stream = torch.cuda.current_stream(device)
    step = 0
    for v in tqdm(range(shape[0]), desc="load tokens", disable=shape[0] * shape[1] < 50_000):
        for lo in range(0, shape[1], READ_BLOCK):
            hi, slot = min(lo + READ_BLOCK, shape[1]), step % 2
            if copied[slot] is not None:
                copied[slot].synchronize()  # before this buffer is refilled
            _read_into(tokens, raw, v, rows[lo:hi], staging[slot][: hi - lo].numpy())
            out[v, lo:hi].copy_(staging[slot][: hi - lo], non_blocking=True)
            copied[slot] = torch.cuda.Event()
            copied[slot].record(stream)
            step += 1
    stream.synchronize()
    return out


def begin_epoch(table, perm: torch.Tensor, view_of: torch.Tensor, batch_size: int) -> None:
    """Tell a streamed table the epoch's batches, so it reads them ahead; others need not."""
    if isinstance(table, StreamedTokens):
        table.begin_epoch(perm, view_of, batch_size)


def advance_table(table, fn, device: torch.device):
    """`fn` (frozen blocks, fp16 tokens in and out) applied to every token of the table:
    in place where the table is held, on the fly per batch where it is streamed."""
    if isinstance(table, StreamedTokens):
        table.transform = fn
        return table
    return map_chunks(fn, table, device, out_dtype=torch.float16, inplace=True)


def gather_views(
    table: torch.Tensor, view_of: torch.Tensor, rows: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """table[view_of[rows], rows] as one index_select on the flattened (V*n, ...) table."""
    if not torch.is_tensor(table):
        return table.gather(view_of, rows, device)
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


def compute_dtype(device: torch.device) -> torch.dtype:
    """What the blocks compute in: bf16 under the GPU's autocast, float32 on the CPU."""
    return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16


def to_compute(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """fp16 tokens cast once to the compute dtype: on the GPU fp16 tokens met bf16 block
    outputs and the residual stream was promoted to fp32 at every block; on the CPU float32
    (fp16 CPU kernels are slow)."""
    return x.to(compute_dtype(device))


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
    if not torch.is_tensor(table):
        return _map_blocks(fn, table, device, out_dtype, chunk, inplace)
    views, n = table.shape[:2]
    out = table if inplace else None
    if inplace and out_dtype != table.dtype:
        raise ValueError(f"inplace needs out_dtype == table dtype ({table.dtype}), got {out_dtype}")
    for v in range(views):
        for lo in range(0, n, chunk):
            x = to_compute(table[v, lo : lo + chunk].to(device, non_blocking=True), device)
            with autocast(device):
                y = fn(x)
            if out is None:
                out = torch.empty((views, n, *y.shape[1:]), dtype=out_dtype, device=table.device)
            out[v, lo : lo + len(y)] = y.to(out.device, out_dtype)
    return out


def _map_blocks(fn, table, device, out_dtype, chunk: int, inplace: bool) -> torch.Tensor | None:
    """`map_chunks` over a `HostChunks` or `StreamedTokens` table, in the same blocks as over a
    tensor (so the same numbers); results on the host."""
    if inplace and not isinstance(table, HostChunks):
        raise ValueError("only a table held in memory can be mapped in place")
    views, n = table.shape[:2]
    out = None
    for v in range(views):
        for lo in range(0, n, chunk):
            block = table.block(v, lo, min(lo + chunk, n))  # (b, L, W)
            if isinstance(table, StreamedTokens):
                x = table.on_device(block, device)
            else:
                x = block.to(device, non_blocking=True)
            x = to_compute(x, device)
            with autocast(device):
                y = fn(x)
            if inplace:
                table.write_block(v, lo, y.to("cpu", table.dtype))
                continue
            if out is None:
                out = torch.empty((views, n, *y.shape[1:]), dtype=out_dtype)
            out[v, lo : lo + len(y)] = y.to("cpu", out_dtype)
    return table if inplace else out
