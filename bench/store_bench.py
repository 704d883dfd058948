"""Token-store write rate: the extractor's writer (ChunkAssembler + pool) against the old path.

    python -m bench.store_bench                 # prints the row(s) as a table
    rows = store_write_rows(images=4096, out_dir=Path("/tmp/x"))

Both sides write the same uncompressed fp16 store (1,024-row chunks, one view, depth 2) from
the same in-memory batches, prepared outside the timer; each is warmed up once and the median
of three runs is reported. Ours feeds `ChunkAssembler.add` batch by batch, as
`features.extract` does, and waits for its writer threads (`finish`); the baseline is the old
path: `FeatureStore.write_chunk_zarr` (every array through zarr) chunk after chunk from one
thread. Rates include the page cache absorbing the writes, as they do in a real run.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np

from bench.common import format_table, rate, time_call
from features.chunks import ChunkAssembler, ChunkBuffers
from features.store import TOKEN_SHAPE, FeatureStore, StoreSpec, remove_store

CHUNK_N = 1024  # the chunk size the targets were set at (78.6 MB per view)
BATCH = 256  # FeatureConfig's default batch: four batches fill a chunk


class _Meta:
    """Keys / paths / labels by global index, standing in for `features.meta.MetaCache`."""

    def __init__(self, n: int):
        self.keys = [f"s{i:07d}" for i in range(n)]

    def rows(self, start: int, stop: int):
        names = self.keys[start:stop]
        return names, names, [0] * len(names)

    def forget_before(self, index: int) -> None:
        pass


def _batches(images: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(index, embed, tokens) per batch, as the trunk runner hands them to the assembler."""
    rng = np.random.default_rng(seed)
    block = rng.standard_normal((BATCH, *TOKEN_SHAPE), dtype=np.float32).astype(np.float16)
    out = []
    for lo in range(0, images, BATCH):
        b = min(BATCH, images - lo)
        tokens = np.ascontiguousarray(block[None, :b])  # (1, b, 50, 768), a fresh array per batch
        tokens[0, :, 0, 0] = np.arange(lo, lo + b)  # rows differ, so a misplaced row would show
        embed = np.zeros((b, 512), np.float16)
        out.append((np.arange(lo, lo + b), embed, tokens))
    return out


def _new_store(path: Path, images: int) -> FeatureStore:
    spec = StoreSpec(
        n=images, chunk_n=CHUNK_N, depth=2, views=1, classes=["a"], weights={"name": "random"},
        preprocess={},
    )  # fmt: skip
    return FeatureStore.create(path, spec)


def store_write_rows(*, images: int = 4096, out_dir: Path) -> list[dict]:
    """One row: images/s of the extractor's store writer at one view, with the old path's.

    Args:
        images: rows written per timed run (a multiple of 1,024 keeps every chunk whole).
        out_dir: scratch folder for the two stores (removed afterwards).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    batches = _batches(images)
    meta = _Meta(images)
    ours_store = _new_store(out_dir / "ours.zarr", images)
    old_store = _new_store(out_dir / "old.zarr", images)
    tokens = np.concatenate([t for _, _, t in batches], axis=1)  # (1, images, 50, 768)
    embed = np.zeros((images, 512), np.float16)

    buffers = ChunkBuffers()  # the writer's reused buffers: allocated in the warm-up run, as
    # they are in the first chunks of a real pass (hundreds of chunks), not in every chunk

    def ours():
        assembler = ChunkAssembler(ours_store, meta, set(), buffers=buffers)
        for index, emb, tok in batches:
            assembler.add(index, emb, tok)
        assembler.finish()

    def old():
        for c in range(old_store.num_chunks):
            r = old_store.chunk_rows(c)
            keys, paths, labels = meta.rows(r.start, r.stop)
            old_store.write_chunk_zarr(
                c, keys=keys, paths=paths, labels=labels, embed=embed[r], tokens=tokens[:, r]
            )

    try:
        ours_s = time_call(ours)
        old_s = time_call(old)
        if not np.array_equal(ours_store.tokens[0, :CHUNK_N], tokens[0, :CHUNK_N]):
            raise AssertionError("the fast writer's chunk differs from its input")
    finally:
        for name in ("ours.zarr", "old.zarr"):  # the engine's stores only (engine.outputs)
            remove_store(out_dir / name)
    row_bytes = int(np.prod(TOKEN_SHAPE)) * 2
    return [
        {
            "stage": "host",
            "backend": "store write views=1",
            "images_per_s": round(rate(images, ours_s), 1),
            "gb_per_s": round(rate(images * row_bytes, ours_s) / 1e9, 3),
            "baseline": "zarr write_chunk, 1 thread",
            "baseline_images_per_s": round(rate(images, old_s), 1),
        }
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--out-dir", type=Path, default=None, help="scratch folder (default tmp)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(dir=args.out_dir) as tmp:
        rows = store_write_rows(images=args.images, out_dir=Path(tmp))
    columns = ["stage", "backend", "images_per_s", "gb_per_s", "baseline", "baseline_images_per_s"]
    logging.getLogger(__name__).info("store bench done")
    print(format_table(rows, columns))  # noqa: T201 (a script's output)


if __name__ == "__main__":
    main()
