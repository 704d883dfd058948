"""Token tables that are not one tensor: pinned host chunks, and a table streamed from a store.

    table = HostChunks.allocate((V, n, 50, 768), chunk_rows=13_981, pin=True)
    table = StreamedTokens(store_tokens, rows, views=V)   # reads batches on demand

Both answer what the trainer asks of a token table (see `heads.tensors`): `.shape`, `.device`
(the host), `gather(view_of, rows, device)` -> (B, L, W) on `device`, and `block(v, lo, hi)`,
consecutive rows of one view for chunk-wise passes (LP features, advancing a deeper store).
Rows are indexed along the flattened (V * n) axis, view-major, like the resident table.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from features.chunkio import RawChunks

log = logging.getLogger(__name__)


class HostChunks:
    """A (V, n, L, W) table in host memory as separate chunks of `chunk_rows` flat rows.

    Pinned chunks keep torch's power-of-two rounding to one chunk's worth instead of the
    whole table's (`heads.memory`).
    """

    def __init__(self, shape: tuple[int, ...], chunks: list[torch.Tensor], chunk_rows: int):
        self.shape = torch.Size(shape)
        self.chunks = chunks  # each (<= chunk_rows, L, W)
        self.chunk_rows = chunk_rows
        self.device = torch.device("cpu")
        self.dtype = chunks[0].dtype if chunks else torch.float16

    @classmethod
    def allocate(cls, shape, chunk_rows: int, pin: bool, dtype=torch.float16) -> HostChunks:
        total = shape[0] * shape[1]
        chunks = [
            torch.empty((min(chunk_rows, total - lo), *shape[2:]), dtype=dtype, pin_memory=pin)
            for lo in range(0, total, chunk_rows)
        ]
        return cls(shape, chunks, chunk_rows)

    def is_pinned(self) -> bool:
        return bool(self.chunks) and self.chunks[0].is_pinned()

    def chunk_pieces(self, c: int, rows: int) -> Iterator[tuple[int, int, torch.Tensor]]:
        """(view, first row, storage view) of chunk `c` in runs of <= `rows` rows that do not
        cross a view boundary (what loading fills one read at a time)."""
        n, start, chunk = self.shape[1], c * self.chunk_rows, self.chunks[c]
        lo = 0
        while lo < len(chunk):
            v, r = divmod(start + lo, n)
            b = min(rows, len(chunk) - lo, n - r)
            yield v, r, chunk[lo : lo + b]
            lo += b

    def _pieces(self, view: int, lo: int, hi: int) -> Iterator[torch.Tensor]:
        """Views of the storage that hold rows [lo, hi) of `view`, in order."""
        flat, stop = view * self.shape[1] + lo, view * self.shape[1] + hi
        while flat < stop:
            c, offset = divmod(flat, self.chunk_rows)
            take = min(stop - flat, len(self.chunks[c]) - offset)
            yield self.chunks[c][offset : offset + take]
            flat += take

    def block(self, view: int, lo: int, hi: int) -> torch.Tensor:
        """(hi - lo, L, W) rows of one view: a view of the storage, or a copy across chunks."""
        pieces = list(self._pieces(view, lo, hi))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def write_block(self, view: int, lo: int, values: torch.Tensor) -> None:
        """Rows [lo, lo + len(values)) of `view` = values."""
        at = 0
        for piece in self._pieces(view, lo, lo + len(values)):
            piece.copy_(values[at : at + len(piece)])
            at += len(piece)

    def gather(self, view_of, rows, device: torch.device) -> torch.Tensor:
        """table[view_of[rows], rows] as a (B, L, W) tensor on `device`."""
        index = (view_of[rows].cpu() * self.shape[1] + rows.cpu()).long()  # (B,) flat
        order = torch.argsort(index)
        sorted_index = index[order]
        out = torch.empty(
            (len(index), *self.shape[2:]), dtype=self.dtype, pin_memory=self.is_pinned()
        )
        which = sorted_index // self.chunk_rows
        bounds = torch.searchsorted(which, torch.arange(len(self.chunks) + 1))
        for c in torch.unique_consecutive(which).tolist():
            a, b = int(bounds[c]), int(bounds[c + 1])
            local = sorted_index[a:b] - c * self.chunk_rows
            torch.index_select(self.chunks[c], 0, local, out=out[a:b])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        moved = out.to(device, non_blocking=True)
        return moved.index_select(0, inverse.to(device))  # back into the batch's order


class StreamedTokens:
    """Tokens read from a store as batches are needed, prefetched by a background thread.

    Args:
        tokens: the store's (V, N, L, W) array (Zarr or NumPy).
        rows: (n,) store rows the table's rows 0..n-1 stand for.
        views: views used (the first `views` of the store).
        prefetch: batches read ahead of the one being trained on.
        transform: applied on the device to every gathered batch and block, e.g. the frozen
            blocks between a deeper store and the trained depth (fp16 in, fp16 out).
    """

    def __init__(self, tokens, rows: np.ndarray, views: int, prefetch: int = 4,
                 transform: Callable | None = None):  # fmt: skip
        self.source = tokens
        self.rows = np.asarray(rows, dtype=np.int64)
        self.shape = torch.Size((views, len(self.rows), *tokens.shape[2:]))
        self.device = torch.device("cpu")
        self.dtype = torch.float16
        self.prefetch = prefetch
        self.transform = transform
        self.raw = RawChunks.of(tokens)
        if self.raw is None and not isinstance(tokens, np.ndarray):
            log.warning(
                "streaming a compressed or non-local token array: every row read decodes a "
                "whole chunk (slow); an uncompressed store streams row by row"
            )
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ---------------------------------------------------------------- reading
    def read(self, views: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(B, L, W) float16: tokens of table rows `rows`, view `views[i]` for row i."""
        out = np.empty((len(rows), *self.shape[2:]), np.float16)
        store_rows = self.rows[rows]
        for v in np.unique(views).tolist():
            slots = np.flatnonzero(views == v)
            if self.raw is not None:
                self.raw.read_rows(v, store_rows[slots], out, slots=slots)
            elif isinstance(self.source, np.ndarray):
                out[slots] = self.source[v, store_rows[slots]]
            else:
                for slot, r in zip(slots.tolist(), store_rows[slots].tolist(), strict=True):
                    out[slot] = self.source[v, r]
        return out

    def block(self, view: int, lo: int, hi: int) -> torch.Tensor:
        """(hi - lo, L, W) rows of one view, read from the store."""
        return torch.from_numpy(self.read(np.full(hi - lo, view), np.arange(lo, hi)))

    def on_device(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """A block from `block` moved to `device`, with `transform` applied."""
        return self._transformed(x.to(device, non_blocking=True), device)

    # ---------------------------------------------------------------- one epoch
    def begin_epoch(self, perm: torch.Tensor, view_of: torch.Tensor, batch_size: int) -> None:
        """Start reading the epoch's batches, in the order `_run_epoch` will ask for them."""
        self.end_epoch()
        perm, view_of = perm.cpu().numpy(), view_of.cpu().numpy()
        self._queue = queue.Queue(maxsize=self.prefetch)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._produce, args=(perm, view_of, batch_size), daemon=True,
            name="token-prefetch",
        )  # fmt: skip
        self._thread.start()

    def _read_batch(self, rows: np.ndarray, views: np.ndarray) -> torch.Tensor:
        batch = torch.from_numpy(self.read(views, rows))  # (B, L, W)
        return batch.pin_memory() if torch.cuda.is_available() else batch

    def _produce(self, perm: np.ndarray, view_of: np.ndarray, batch_size: int) -> None:
        """Background thread: `prefetch` batches read at once by a pool (preads release the
        GIL, and a disk serves several requests faster than one), handed over in order."""

        try:
            with ThreadPoolExecutor(self.prefetch, thread_name_prefix="token-read") as pool:
                reading: deque = deque()
                for lo in range(0, len(perm), batch_size):
                    rows = perm[lo : lo + batch_size]
                    reading.append((rows, pool.submit(self._read_batch, rows, view_of[rows])))
                    if len(reading) >= self.prefetch and not self._hand_over(reading.popleft()):
                        return
                while reading:
                    if not self._hand_over(reading.popleft()):
                        return
        except BaseException as err:  # surfaced in the training thread
            self._queue.put((None, err))

    def _hand_over(self, item) -> bool:
        """Queue one read batch for the trainer; False once the epoch was ended early."""
        rows, future = item
        batch = future.result()
        while not self._stop.is_set():
            try:
                self._queue.put((rows, batch), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def end_epoch(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self._thread = self._queue = None

    def gather(self, view_of, rows, device: torch.device) -> torch.Tensor:
        """The next prefetched batch (it must be `rows`), or a direct read outside an epoch."""
        rows_np = rows.cpu().numpy()
        if self._queue is None:
            batch = torch.from_numpy(self.read(view_of[rows].cpu().numpy(), rows_np))
        else:
            got, batch = self._queue.get()
            if got is None:
                raise batch
            if not np.array_equal(got, rows_np):
                raise RuntimeError("streamed batches were asked for out of the epoch's order")
        x = batch.to(device, non_blocking=True)  # (B, L, W)
        return self._transformed(x, device)

    def _transformed(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """`transform` as the resident path applies it once (`heads.tensors.map_chunks`):
        fp32 on the CPU, bf16 autocast on the GPU, the result rounded to fp16."""
        if self.transform is None:
            return x
        from heads.tensors import autocast, to_compute  # deferred: import cycle via heads.tensors

        with torch.no_grad(), autocast(device):
            y = self.transform(to_compute(x, device))
        return y.to(torch.float16)
