"""The Zarr feature store: exact schema, round trips, resume markers and validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from engine.errors import UserError
from features.store import (
    FORMAT,
    FeatureStore,
    StoreSpec,
    open_store,
    progress_dir,
    remove_store,
)

N, CHUNK, V = 7, 3, 2
TOKENS = (5, 8)  # a small stand-in for (50, 768)
EMBED = 4


def make_spec(depth: int = 2, **overrides) -> StoreSpec:
    fields = dict(
        n=N,
        chunk_n=CHUNK,
        depth=depth,
        views=V,
        classes=["0000", "0001"],
        weights={"name": "random", "sha256": None},
        preprocess={"name": "test"},
        token_shape=TOKENS,
        embed_dim=EMBED,
        source={"fingerprint": "abc", "num_samples": N},
    )
    fields.update(overrides)
    return StoreSpec(**fields)


def synthetic_rows(seed: int = 0):
    rng = np.random.default_rng(seed)
    embed = rng.standard_normal((N, EMBED)).astype(np.float32)
    embed /= np.linalg.norm(embed, axis=1, keepdims=True)
    return {
        "keys": [f"k{i}-ü" for i in range(N)],  # non-ASCII survives the UTF-8 round trip
        "paths": [f"cls/img {i}.jpg" for i in range(N)],
        "labels": rng.integers(-1, 2, N).astype(np.int32),
        "embed": embed.astype(np.float16),
        "tokens": rng.standard_normal((V, N, *TOKENS)).astype(np.float16),
    }


def write_all(store: FeatureStore, rows: dict, chunks=None) -> None:
    for c in chunks if chunks is not None else range(store.num_chunks):
        r = store.chunk_rows(c)
        store.write_chunk(
            c,
            keys=rows["keys"][r],
            paths=rows["paths"][r],
            labels=rows["labels"][r],
            embed=rows["embed"][r],
            tokens=rows["tokens"][:, r] if store.depth >= 1 else None,
        )


def test_round_trip_and_exact_schema(tmp_path):
    rows = synthetic_rows()
    store = FeatureStore.create(tmp_path / "s.zarr", make_spec())
    write_all(store, rows, chunks=[2, 0, 1])  # any order: chunks are independent
    store.mark_complete()
    store = open_store(tmp_path / "s.zarr")

    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert sorted(group.array_keys()) == ["embed", "keys", "labels", "paths", "tokens"]
    assert group["labels"].dtype == np.int32 and group["labels"].shape == (N,)
    assert group["embed"].dtype == np.float16 and group["embed"].shape == (N, EMBED)
    assert group["tokens"].dtype == np.float16 and group["tokens"].shape == (V, N, *TOKENS)
    meta = json.loads((tmp_path / "s.zarr" / "keys" / "zarr.json").read_text())
    assert meta["data_type"] == "string" and meta["codecs"][0]["name"] == "vlen-utf8"
    assert group["tokens"].chunks == (1, CHUNK, *TOKENS)
    assert group["embed"].chunks == (CHUNK, EMBED)
    assert group["tokens"].compressors == () and group["embed"].compressors == ()

    assert dict(group.attrs) == {
        "format": FORMAT,
        "model": "ViT-B-32",
        "weights": {"name": "random", "sha256": None},
        "depth": 2,
        "classes": ["0000", "0001"],
        "views": V,
        "preprocess": {"name": "test"},
        "source": {"fingerprint": "abc", "num_samples": N},
        "complete": True,
    }
    assert store.keys == rows["keys"] and store.paths == rows["paths"]
    np.testing.assert_array_equal(store.labels, rows["labels"])
    np.testing.assert_array_equal(store.embed[:], rows["embed"])
    np.testing.assert_array_equal(store.embed[[1, 5]], rows["embed"][[1, 5]])
    for view in range(V):
        np.testing.assert_array_equal(store.tokens[view], rows["tokens"][view])
    np.testing.assert_array_equal(store.tokens[1, [0, 4, 6]], rows["tokens"][1, [0, 4, 6]])
    np.testing.assert_array_equal(store.tokens[0, 2:5], rows["tokens"][0, 2:5])
    assert not progress_dir(tmp_path / "s.zarr").exists()  # markers gone once complete


@pytest.mark.parametrize("compressor", ["zstd", "lz4"])
def test_compressed_tokens_round_trip(tmp_path, compressor):
    rows = synthetic_rows(1)
    store = FeatureStore.create(tmp_path / "c.zarr", make_spec(compressor=compressor))
    write_all(store, rows)
    np.testing.assert_array_equal(store.tokens[1], rows["tokens"][1])
    assert store.group["tokens"].compressors != ()


def test_depth_zero_store_has_no_tokens(tmp_path):
    rows = synthetic_rows()
    store = FeatureStore.create(tmp_path / "d0.zarr", make_spec(depth=0))
    write_all(store, rows)
    store.mark_complete()
    store = open_store(tmp_path / "d0.zarr")
    assert "tokens" not in store.group
    np.testing.assert_array_equal(store.embed[:], rows["embed"])
    assert store.tokens is None  # depth 0: embeddings only
    with pytest.raises(ValueError, match="tokens"):
        store.write_chunk(0, keys=["a"] * 3, paths=["a"] * 3, labels=[0] * 3,
                          embed=rows["embed"][:3], tokens=rows["tokens"][:, :3])  # fmt: skip


def test_chunk_markers_track_progress_until_complete(tmp_path):
    rows = synthetic_rows()
    store = FeatureStore.create(tmp_path / "p.zarr", make_spec())
    assert store.num_chunks == 3 and store.chunk_rows(2) == slice(6, 7)
    write_all(store, rows, chunks=[1])
    assert store.done_chunks() == {1}
    with pytest.raises(RuntimeError, match="2 chunks unwritten"):
        store.mark_complete()
    with pytest.raises(UserError, match="unfinished"):
        open_store(tmp_path / "p.zarr")
    partial = open_store(tmp_path / "p.zarr", require_complete=False)
    assert partial.done_chunks() == {1} and not partial.complete
    write_all(store, rows, chunks=[0, 2])
    store.mark_complete()
    assert open_store(tmp_path / "p.zarr").done_chunks() == {0, 1, 2}


def test_write_chunk_checks_row_count(tmp_path):
    store = FeatureStore.create(tmp_path / "w.zarr", make_spec())
    rows = synthetic_rows()
    with pytest.raises(ValueError, match="3 rows"):
        store.write_chunk(0, keys=["a"], paths=["a"], labels=[0], embed=rows["embed"][:1],
                          tokens=rows["tokens"][:, :1])  # fmt: skip


def test_open_store_names_the_problem(tmp_path):
    with pytest.raises(UserError, match="no feature store at"):
        open_store(tmp_path / "missing.zarr")

    store = FeatureStore.create(tmp_path / "m.zarr", make_spec(model="ViT-L-14"))
    write_all(store, synthetic_rows())
    store.mark_complete()
    with pytest.raises(UserError, match=r"m\.zarr holds features of model 'ViT-L-14'"):
        open_store(tmp_path / "m.zarr")
    assert open_store(tmp_path / "m.zarr", model=None).attrs["model"] == "ViT-L-14"

    other = zarr.open_group(str(tmp_path / "o.zarr"), mode="w")
    other.attrs["format"] = "somebody-else/2"
    with pytest.raises(UserError, match=r"o\.zarr is not an engine.features/1 store"):
        open_store(tmp_path / "o.zarr")

    zarr.create_array(str(tmp_path / "a.zarr"), shape=(2,), dtype="int32")
    with pytest.raises(UserError, match="not a Zarr v3 group"):
        open_store(tmp_path / "a.zarr")


def test_open_store_checks_dtypes(tmp_path):
    path = tmp_path / "t.zarr"
    store = FeatureStore.create(path, make_spec())
    write_all(store, synthetic_rows())
    store.mark_complete()
    group = zarr.open_group(str(path), mode="r+")
    del group["labels"]
    group.create_array("labels", shape=(N,), dtype="int64")
    with pytest.raises(UserError, match="labels is int64"):
        open_store(path)
    del group["embed"]
    with pytest.raises(UserError, match=r"lacks the arrays \['embed'\]"):
        open_store(path)


def test_views_and_depth_are_checked_on_read(tmp_path):
    store = FeatureStore.create(tmp_path / "v.zarr", make_spec(depth=3))
    assert store.tokens.shape[0] == store.views == 2
    store.check_depth(3)
    store.check_depth(1)  # a depth-3 store serves depth 1 (see features.split.Advance)
    with pytest.raises(UserError, match="--unfreeze-last 5"):
        store.check_depth(5)


def test_remove_store_deletes_store_and_markers(tmp_path):
    store = FeatureStore.create(tmp_path / "r.zarr", make_spec())
    write_all(store, synthetic_rows(), chunks=[0])
    assert progress_dir(store.path).is_dir()
    remove_store(store.path)
    assert not store.path.exists() and not progress_dir(store.path).exists()
