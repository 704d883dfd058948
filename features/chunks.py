"""Assemble batch outputs into whole store chunks and write them in the background.

Batches and chunks do not line up (batch size 256, chunk 256 rows but shards of 1000, or a
rank that skips other ranks' shards), so rows are buffered per chunk and a chunk is written
the moment its last row arrives. A rank delivers its rows in store order, so only one or two
chunks are ever open: memory is O(chunk_n), not O(N).

Writes run in background threads (file writes and NumPy copies release the GIL; chunks are
separate files, so two writers never touch the same one) so the disk works while the
accelerator computes the next batch; at most `max_pending` chunk writes are queued (memory
bound). `add` only keeps views of the batch's rows (the caller hands over fresh arrays per
batch, as `features.runner.TrunkRunner` does); the writer thread copies them once into a
reused page-aligned buffer and writes that with direct I/O (`features.chunkio`). On the 2-core
test machine, copying in the caller's thread capped the writer at ~8,000 img/s.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from features.chunkio import aligned_empty
from features.meta import MetaCache
from features.store import FeatureStore

# One thread wrote 0.8-1.2 GB/s of direct I/O on the test machine's disk and zarr's path
# 0.2-0.5 GB/s; a GPU run produces ~1.2 GB/s per view at 15,000 img/s, so writes overlap on a
# few threads (the copy into the chunk buffer runs there too).
WRITERS = 4


class _OpenChunk:
    """Rows of one chunk received so far: views of the batches they came in, not copies."""

    def __init__(self, rows: int):
        self.pieces: list[tuple] = []  # (local rows, embed (b, 512), tokens (V, b, 50, 768))
        self.filled = np.zeros(rows, bool)


class _Buffer:
    """A whole chunk's rows, each view starting page-aligned (for direct I/O); reused."""

    def __init__(self, rows: int, views: int, token_shape, embed_dim: int, with_tokens: bool):
        self.tokens = (
            aligned_empty((views, rows, *token_shape)) if with_tokens else None
        )  # (V, rows, 50, 768)
        self.embed = aligned_empty((1, rows, embed_dim))[0]  # (rows, 512)

    def matches(self, rows: int, views: int, token_shape, embed_dim: int, with_tokens: bool):
        if self.embed.shape != (rows, embed_dim) or (self.tokens is not None) != with_tokens:
            return False
        return self.tokens is None or self.tokens.shape == (views, rows, *token_shape)

    def fill(self, pieces: list[tuple]) -> _Buffer:
        for local, embed, tokens in pieces:
            self.embed[local] = embed
            if self.tokens is not None:
                self.tokens[:, local] = tokens
        return self


class ChunkBuffers:
    """Chunk buffers kept for reuse once their chunk is written (a fresh 78 MB buffer costs
    its page faults again: 4,000-6,000 img/s to fill on the test VM against 30,000+ reused).

    One pool serves one assembler by default; pass the same pool to successive assemblers
    (a benchmark's repeats) to keep the buffers across them.
    """

    def __init__(self, keep: int = 4):
        self.keep = keep
        self._free: list[_Buffer] = []
        self._lock = threading.Lock()

    def take(self, rows: int, views: int, token_shape, embed_dim: int, with_tokens: bool):
        with self._lock:
            for i, buffer in enumerate(self._free):
                if buffer.matches(rows, views, token_shape, embed_dim, with_tokens):
                    return self._free.pop(i)
        return _Buffer(rows, views, token_shape, embed_dim, with_tokens)

    def give(self, buffer: _Buffer) -> None:
        with self._lock:
            if len(self._free) < self.keep:
                self._free.append(buffer)


def _as_slice(positions: np.ndarray):
    """`positions` as a slice when they are consecutive and ascending, else unchanged."""
    n = len(positions)
    if n and (n == 1 or bool((np.diff(positions) == 1).all())):
        return slice(int(positions[0]), int(positions[-1]) + 1)
    return positions


class ChunkAssembler:
    """Collects rows by global index and writes each chunk once it is full.

    Args:
        store: the store being written (opened for writing).
        meta: keys / paths / labels by global index.
        skip: chunks already written (resume); their rows are ignored.
        max_pending: chunk writes allowed in flight before `add` waits.
        buffers: where written chunks' buffers wait for reuse (default: a pool of its own).
    """

    def __init__(
        self,
        store: FeatureStore,
        meta: MetaCache,
        skip: set[int],
        max_pending: int = 4,
        buffers: ChunkBuffers | None = None,
    ):
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
        self.buffers = buffers if buffers is not None else ChunkBuffers(keep=max_pending)

    def needs(self, index: np.ndarray) -> bool:
        """Whether any of these global rows still has to be computed."""
        return any(int(c) not in self.done for c in np.unique(index // self.chunk_n))

    def add(self, index: np.ndarray, embed: np.ndarray, tokens: np.ndarray | None) -> None:
        """Take rows `index` ((B,) global) with `embed` (B, 512) and `tokens` (V, B, 50, 768).

        Consecutive rows are kept as views of the arrays given (which must not be changed
        afterwards); others are gathered by a fancy index, a copy. A chunk whose last row
        arrives is queued for writing.
        """
        chunk_of = index // self.chunk_n
        for c in np.unique(chunk_of).tolist():
            if c in self.done:
                continue
            sel = _as_slice(np.flatnonzero(chunk_of == c))
            rows = self.store.chunk_rows(c)
            local = _as_slice(index[sel] - rows.start)
            chunk = self.open.get(c)
            if chunk is None:
                chunk = self.open[c] = _OpenChunk(rows.stop - rows.start)
            chunk.pieces.append((local, embed[sel], tokens[:, sel] if self.with_tokens else None))
            chunk.filled[local] = True
            if chunk.filled.all():
                self._submit(c, self.open.pop(c))

    def _write(self, c: int, chunk: _OpenChunk, keys, paths, labels) -> None:
        """Writer thread: one copy of the pieces into a buffer, then the chunk's files."""
        buffer = self.buffers.take(
            len(chunk.filled), self.views, self.token_shape, self.embed_dim, self.with_tokens
        ).fill(chunk.pieces)
        chunk.pieces.clear()  # the batches' memory can go now
        self.store.write_chunk(
            c, keys=keys, paths=paths, labels=labels, embed=buffer.embed, tokens=buffer.tokens
        )
        self.buffers.give(buffer)

    def _submit(self, c: int, chunk: _OpenChunk) -> None:
        rows = self.store.chunk_rows(c)
        keys, paths, labels = self.meta.rows(rows.start, rows.stop)
        self.meta.forget_before(rows.start)
        while len(self._pending) >= self.max_pending:
            self._pending.pop(0).result()  # re-raises a failed write here
        self._pending.append(self._pool.submit(self._write, c, chunk, keys, paths, labels))
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
