"""The fast store writer (raw chunk files, direct I/O, background assembly) against zarr."""

from pathlib import Path

import numpy as np
import pytest

from bench.store_bench import store_write_rows
from features import chunkio
from features.chunkio import ALIGN, RawChunks, aligned_empty, is_aligned
from features.chunks import ChunkAssembler
from features.store import FeatureStore, StoreSpec, open_store

TOKENS = (5, 8)  # a small (L, W) keeps the files tiny
N, CHUNK, VIEWS = 11, 4, 2  # chunks of 4, 4, 3: the last one is padded


def _spec(n=N, chunk=CHUNK, views=VIEWS, compressor="none") -> StoreSpec:
    return StoreSpec(
        n=n, chunk_n=chunk, depth=2, views=views, classes=["a", "b"], weights={"name": "t"},
        preprocess={}, token_shape=TOKENS, embed_dim=6, compressor=compressor,
    )  # fmt: skip


def _rows(n=N, views=VIEWS, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "keys": [f"k{i}" for i in range(n)],
        "paths": [f"c/{i}.jpg" for i in range(n)],
        "labels": rng.integers(0, 2, n),
        "embed": rng.standard_normal((n, 6)).astype(np.float16),
        "tokens": rng.standard_normal((views, n, *TOKENS)).astype(np.float16),
    }


def _write(store: FeatureStore, rows: dict, method: str) -> None:
    for c in range(store.num_chunks):
        r = store.chunk_rows(c)
        getattr(store, method)(
            c, keys=rows["keys"][r], paths=rows["paths"][r], labels=rows["labels"][r],
            embed=rows["embed"][r], tokens=rows["tokens"][:, r],
        )  # fmt: skip


def _files(root: Path, array: str) -> dict[str, bytes]:
    folder = root / array
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_raw_chunk_files_are_byte_identical_to_zarrs(tmp_path):
    rows = _rows()
    fast = FeatureStore.create(tmp_path / "fast.zarr", _spec())
    ref = FeatureStore.create(tmp_path / "ref.zarr", _spec())
    assert RawChunks.of(fast.group["tokens"]) is not None  # the fast path is the one taken
    _write(fast, rows, "write_chunk")
    _write(ref, rows, "write_chunk_zarr")
    for array in ("tokens", "embed", "labels", "keys", "paths"):
        assert _files(tmp_path / "fast.zarr", array) == _files(tmp_path / "ref.zarr", array)
    assert len(_files(tmp_path / "fast.zarr", "tokens")) == 1 + VIEWS * 3  # zarr.json + chunks
    fast.mark_complete()
    back = open_store(tmp_path / "fast.zarr")
    np.testing.assert_array_equal(back.tokens[1], rows["tokens"][1])
    np.testing.assert_array_equal(back.embed[:], rows["embed"])
    assert back.keys == rows["keys"]


def test_compressed_stores_have_no_raw_view_and_still_round_trip(tmp_path):
    store = FeatureStore.create(tmp_path / "z.zarr", _spec(compressor="zstd"))
    assert RawChunks.of(store.group["tokens"]) is None
    rows = _rows()
    _write(store, rows, "write_chunk")
    np.testing.assert_array_equal(store.tokens[0], rows["tokens"][0])


def test_other_chunk_layouts_are_left_to_zarr(tmp_path):
    import zarr

    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    split_rows = group.create_array(
        "t", shape=(2, 8, *TOKENS), chunks=(1, 4, 5, 4), dtype="float16", compressors=None
    )
    two_views = group.create_array(
        "u", shape=(2, 8, *TOKENS), chunks=(2, 4, *TOKENS), dtype="float16", compressors=None
    )
    whole = group.create_array(
        "w", shape=(2, 8, *TOKENS), chunks=(1, 4, *TOKENS), dtype="float16", compressors=None
    )
    assert RawChunks.of(split_rows) is None and RawChunks.of(two_views) is None
    assert RawChunks.of(whole) is not None and RawChunks.of(np.zeros(3)) is None


def test_aligned_buffers_start_every_view_on_a_block_boundary():
    buffer = aligned_empty((3, 7, *TOKENS))
    assert all(is_aligned(buffer[v]) and buffer[v].flags.c_contiguous for v in range(3))
    assert buffer.strides[0] % ALIGN == 0 and buffer.strides[1:] == (80, 16, 2)


@pytest.mark.parametrize("aligned", [True, False])
def test_direct_and_buffered_writes_give_the_same_file(tmp_path, aligned):
    store = FeatureStore.create(tmp_path / "s.zarr", _spec(n=3, chunk=4, views=1))
    raw = RawChunks.of(store.group["tokens"])
    block = aligned_empty((1, 3, *TOKENS))[0] if aligned else np.empty((3, *TOKENS), np.float16)
    block[:] = np.arange(3 * 40).reshape(3, *TOKENS)  # 240 bytes: not a multiple of ALIGN
    if aligned:
        assert is_aligned(block)
    raw.write((0, 0), block)
    data = raw.path((0, 0)).read_bytes()
    assert len(data) == 4 * 40 * 2  # padded to the full chunk
    np.testing.assert_array_equal(np.frombuffer(data, np.float16)[:120], block.reshape(-1))
    assert not any(data[240:])


def test_read_rows_matches_zarr_in_any_order_and_reads_missing_chunks_as_zeros(tmp_path):
    rows = _rows()
    store = FeatureStore.create(tmp_path / "s.zarr", _spec())
    _write(store, rows, "write_chunk")
    raw = RawChunks.of(store.group["tokens"])
    pick = np.array([10, 0, 5, 5, 3, 8])
    out = np.empty((len(pick), *TOKENS), np.float16)
    raw.read_rows(1, pick, out)
    np.testing.assert_array_equal(out, rows["tokens"][1, pick])
    raw.path((1, 1)).unlink()  # chunk 1 (rows 4..7) never written
    raw.read_rows(1, pick, out)
    expected = rows["tokens"][1, pick].copy()
    expected[[2, 3]] = 0
    np.testing.assert_array_equal(out, expected)


def test_assembler_writes_rows_given_in_any_batching(tmp_path):
    rows = _rows()
    store = FeatureStore.create(tmp_path / "s.zarr", _spec())

    class Meta:
        def rows(self, a, b):
            return rows["keys"][a:b], rows["paths"][a:b], rows["labels"][a:b].tolist()

        def forget_before(self, index):
            pass

    assembler = ChunkAssembler(store, Meta(), skip=set(), max_pending=1)
    # batches straddle chunks; one batch delivers its rows out of order (the fancy-index path)
    for index in (np.arange(0, 3), np.array([5, 3, 4]), np.arange(6, 11)):
        assembler.add(index, rows["embed"][index], rows["tokens"][:, index])
    assembler.finish()
    assert sorted(assembler.written) == [0, 1, 2]
    store.mark_complete()
    back = open_store(tmp_path / "s.zarr")
    np.testing.assert_array_equal(back.tokens[0], rows["tokens"][0])
    np.testing.assert_array_equal(back.tokens[1], rows["tokens"][1])
    np.testing.assert_array_equal(back.embed[:], rows["embed"])


def test_no_direct_io_falls_back_to_buffered_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(chunkio, "_DIRECT", 0)
    rows = _rows()
    store = FeatureStore.create(tmp_path / "s.zarr", _spec())
    _write(store, rows, "write_chunk")
    np.testing.assert_array_equal(store.tokens[1], rows["tokens"][1])


def test_store_bench_row_reports_both_paths(tmp_path):
    [row] = store_write_rows(images=2048, out_dir=tmp_path)
    assert row["stage"] == "host" and row["backend"] == "store write views=1"
    assert row["images_per_s"] > 0 and row["baseline_images_per_s"] > 0
    assert row["gb_per_s"] == pytest.approx(row["images_per_s"] * 76_800 / 1e9, abs=1e-3)
    assert not any(tmp_path.iterdir())  # scratch stores removed
