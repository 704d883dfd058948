"""Assemble batch outputs into whole store chunks and write them in the background.

Batches and chunks do not line up (batch size 256, chunk 256 rows but shards of 1000, or a
rank that skips other ranks' shards), so rows are buffered per chunk and a chunk is written
the moment its last row arrives. A rank delivers its rows in store order, so only one or two
chunks are ever open: memory is O(chunk_n), not O(N).

Writes run in background threads (zarr's file writes release the GIL; chunks are separate
files, so two writers never touch the same one) so the disk works while the accelerator
computes the next batch; at most `max_pending` chunk writes are queued (memory bound).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from features.meta import MetaCache
from features.store import FeatureStore

# One thread wrote ~300 MB/s (4,000 img/s per view) on the test machine's disk; a GPU run
# produces ~1.2 GB/s at 15,000 img/s, so writes overlap on a few threads.
WRITERS = 4


class _OpenChunk:
    def __init__(self, rows: int, views: int, token_shape, embed_dim: int, with_tokens: bool):
        self.tokens = (
            np.zeros((views, rows, *token_shape), np.float16) if with_tokens else None
        )  # (V, rows, 50, 768)
        self.embed = np.zeros((rows, embed_dim), np.float16)  # (rows, 512)
        self.filled = np.zeros(rows, bool)


class ChunkAssembler:
    """Collects rows by global index and writes each chunk once it is full.

    Args:
        store: the store being written (opened for writing).
        meta: keys / paths / labels by global index.
        skip: chunks already written (resume); their rows are ignored.
        max_pending: chunk writes allowed in flight before `add` waits.
    """

    def __init__(self, store: FeatureStore, meta: MetaCache, skip: set[int], max_pending: int = 4):
        self.store, self.meta, self.done = store, meta, set(skip)
        self.chunk_n = store.chunk_n
        tokens = store.group.get("tokens", None)
        self.with_tokens = tokens is not None
        self.views = tokens.shape[0] if tokens is not None else 0
        self.token_shape = tokens.shape[2:] if tokens is not None else ()
        self.embed_dim = store.group["embed"].shape[1]
        self.open: dict[int, _OpenChunk] = {}
        self.written: list[int] = []
        self._pool = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="store-writer")
        self._pending: list[Future] = []
        self.max_pending = max_pending

    def needs(self, index: np.ndarray) -> bool:
        """Whether any of these global rows still has to be computed."""
        return any(int(c) not in self.done for c in np.unique(index // self.chunk_n))

    def add(self, index: np.ndarray, embed: np.ndarray, tokens: np.ndarray | None) -> None:
        """Buffer rows `index` ((B,) global) with `embed` (B, 512) and `tokens` (V, B, 50, 768)."""
        chunk_of = index // self.chunk_n
        for c in np.unique(chunk_of).tolist():
            if c in self.done:
                continue
            sel = np.flatnonzero(chunk_of == c)
            rows = self.store.chunk_rows(c)
            local = index[sel] - rows.start
            chunk = self.open.get(c)
            if chunk is None:
                chunk = self.open[c] = _OpenChunk(
                    rows.stop - rows.start,
                    self.views,
                    self.token_shape,
                    self.embed_dim,
                    self.with_tokens,
                )
            chunk.embed[local] = embed[sel]
            if self.with_tokens:
                chunk.tokens[:, local] = tokens[:, sel]
            chunk.filled[local] = True
            if chunk.filled.all():
                self._submit(c, self.open.pop(c))

    def _submit(self, c: int, chunk: _OpenChunk) -> None:
        rows = self.store.chunk_rows(c)
        keys, paths, labels = self.meta.rows(rows.start, rows.stop)
        self.meta.forget_before(rows.start)
        while len(self._pending) >= self.max_pending:
            self._pending.pop(0).result()  # re-raises a failed write here
        self._pending.append(
            self._pool.submit(
                self.store.write_chunk,
                c,
                keys=keys,
                paths=paths,
                labels=labels,
                embed=chunk.embed,
                tokens=chunk.tokens,
            )
        )
        self.done.add(c)
        self.written.append(c)

    def close(self) -> None:
        """Wait for the writes in flight (also when the run is interrupted: they are whole
        chunks, worth keeping for the resume) and stop the writer thread."""
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pending.clear()
            self._pool.shutdown(wait=True)

    def finish(self) -> None:
        """Wait for every write; fail if a chunk never received all its rows."""
        self.close()
        if self.open:
            c, chunk = next(iter(self.open.items()))
            missing = self.store.chunk_rows(c).start + np.flatnonzero(~chunk.filled)
            raise RuntimeError(
                f"the decoder never delivered rows {missing[:5].tolist()} (chunk {c}); "
                "the store is left unfinished"
            )
