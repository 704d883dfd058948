"""Batched view geometry: counter-based, independent of batching, ranks and backend, and the
same random-resized-crop rule as torchvision's loop."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from test_decode_support import SIZES, make_jpeg, write_shards

import shards.decode as decode
import shards.decode.preprocess as pp
from shards.decode.catalog import load_catalog
from shards.decode.dali import geometry_columns, prepare_batch
from shards.decode.pil import decode_views

N, SHARD_SIZE, VIEWS, SEED = 13, 5, 3, 11


def reference_crop(width: int, height: int, u: np.ndarray) -> tuple[int, int, int, int]:
    """torchvision's `RandomResizedCrop.get_params` loop, one try at a time, on the same draws."""
    lo, hi = math.log(pp.RRC_RATIO[0]), math.log(pp.RRC_RATIO[1])
    for t in range(pp.TRIES):
        area = width * height * (pp.RRC_SCALE[0] + (pp.RRC_SCALE[1] - pp.RRC_SCALE[0]) * u[2 * t])
        aspect = math.exp(lo + (hi - lo) * u[2 * t + 1])
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(u[2 * pp.TRIES] * (height - h + 1))
            left = int(u[2 * pp.TRIES + 1] * (width - w + 1))
            return left, top, w, h
    ratio = width / height
    if ratio < pp.RRC_RATIO[0]:
        w, h = width, round(width / pp.RRC_RATIO[0])
    elif ratio > pp.RRC_RATIO[1]:
        w, h = round(height * pp.RRC_RATIO[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def test_vectorised_crops_equal_torchvisions_loop():
    rng = np.random.default_rng(0)
    widths = np.concatenate([rng.integers(20, 900, 300), [1000, 223, 500, 224]])
    heights = np.concatenate([rng.integers(20, 900, 300), [223, 1000, 375, 224]])
    u = pp.counter_uniforms(3, np.arange(len(widths)), 1, pp.DRAWS)  # (N, DRAWS)
    ours = pp.random_resized_crops(widths, heights, u)
    sizes = zip(widths.tolist(), heights.tolist(), strict=True)
    expected = [reference_crop(w, h, u[i]) for i, (w, h) in enumerate(sizes)]
    assert ours.tolist() == [list(e) for e in expected]
    assert ours[300].tolist() == [351, 0, 297, 223]  # 1000x223: the centred fallback
    assert ours[301].tolist() == [0, 351, 223, 297]


def test_geometry_is_deterministic_and_independent_of_batching():
    rng = np.random.default_rng(1)
    widths, heights = rng.integers(100, 800, 500), rng.integers(100, 800, 500)
    index = np.arange(1000, 1500)
    whole = pp.batch_geometry(widths, heights, index, seed=SEED, views=VIEWS)
    again = pp.batch_geometry(widths, heights, index, seed=SEED, views=VIEWS)
    cuts = [0, 1, 7, 64, 250, 251, 500]
    parts = [pp.batch_geometry(widths[a:b], heights[a:b], index[a:b], seed=SEED, views=VIEWS)
             for a, b in zip(cuts, cuts[1:], strict=False)]  # fmt: skip
    assert np.array_equal(whole.boxes, again.boxes) and np.array_equal(whole.flips, again.flips)
    assert np.array_equal(whole.boxes, np.concatenate([p.boxes for p in parts], axis=1))
    assert np.array_equal(whole.flips, np.concatenate([p.flips for p in parts], axis=1))
    reversed_ = pp.batch_geometry(widths[::-1], heights[::-1], index[::-1], seed=SEED, views=VIEWS)
    assert np.array_equal(whole.boxes, reversed_.boxes[:, ::-1])  # order inside a batch: none
    other_seed = pp.batch_geometry(widths, heights, index, seed=SEED + 1, views=VIEWS)
    assert np.array_equal(whole.boxes[0], other_seed.boxes[0])  # the eval view has no seed
    # Random sizes: a third of them are too elongated for any try (the fallback is fixed).
    assert (whole.boxes[1:] != other_seed.boxes[1:]).any(axis=-1).mean() > 0.25
    assert (whole.boxes[1] != whole.boxes[2]).any(axis=-1).mean() > 0.25  # views differ
    assert 0.4 < whole.flips[1:].mean() < 0.6 and not whole.flips[0].any()


def test_eval_view_is_exactly_eval_params():
    widths = [w for w, _ in SIZES] + [1, 7]
    heights = [h for _, h in SIZES] + [7, 1]
    geo = pp.batch_geometry(widths, heights, range(len(widths)), seed=0, views=1)
    assert [geo.params(i)[0] for i in range(len(widths))] == [
        pp.eval_params(w, h) for w, h in zip(widths, heights, strict=True)
    ]


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    jpegs = [make_jpeg(*SIZES[i % len(SIZES)], seed=i) for i in range(N)]
    out = tmp_path_factory.mktemp("geometry")
    write_shards(out, jpegs, shard_size=SHARD_SIZE, labels=[0] * N)
    return out, jpegs


def feeder_columns(catalog, batch_size: int) -> list[np.ndarray]:
    """The DALI feeder's geometry columns of a whole pass, batches concatenated."""
    n = len(catalog)
    batches = [prepare_batch(catalog, range(s, min(s + batch_size, n)), seed=SEED, views=VIEWS)
               for s in range(0, n, batch_size)]  # fmt: skip
    return [np.concatenate([b[c] for b in batches]) for c in range(1, 3 + 3 * VIEWS)]


def test_dali_feeder_and_pillow_use_the_same_boxes(packed, monkeypatch):
    """The DALI feeder (sizes from shard metadata) and the Pillow backend (sizes of the decoded
    image) give the same geometry, whatever the batch size or rank."""
    shard_dir, jpegs = packed
    seen = []
    real = pp.pil_views
    record = lambda img, params: seen.append(params) or real(img, params)  # noqa: E731
    monkeypatch.setattr("shards.decode.pil.pil_views", record)
    for i, jpeg in enumerate(jpegs):
        decode_views(jpeg, f"k{i}", index=i, seed=SEED, views=VIEWS)
    sizes = [Image.open(io.BytesIO(j)).size for j in jpegs]
    geo = pp.batch_geometry(*zip(*sizes, strict=True), range(N), seed=SEED, views=VIEWS)
    assert seen == [geo.params(i) for i in range(N)]  # Pillow used the batched geometry
    expected = geometry_columns(geo)
    catalog = load_catalog(shard_dir)
    for batch_size in (1, 4, N):
        got = feeder_columns(catalog, batch_size)
        assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True)), batch_size
    rank1 = load_catalog(shard_dir, rank=1, world_size=2)  # shards 1 (samples 5..9)
    assert rank1.indices.tolist() == list(range(5, 10))
    got = feeder_columns(rank1, 3)
    assert all(np.array_equal(g, e[5:10]) for g, e in zip(got, expected, strict=True))


@pytest.mark.skipif(not decode.HAS_DALI, reason="DALI is not installed")
def test_dali_reads_fed_buffers_in_place_across_many_batches(packed):
    """external_source(no_copy=True) over more batches than DALI's prefetch queue (7 of 2):
    every view of every sample still matches Pillow's, in store order."""
    import gc

    from shards.decode import make_loader

    shard_dir, _ = packed

    def collect(backend):
        loader = make_loader(
            shard_dir, backend=backend, batch_size=2, views=VIEWS, seed=SEED, workers=1
        )
        batches = []
        for batch in loader:
            batches.append(batch)
            gc.collect()  # drop whatever nothing references any more
        return torch.cat([b.images for b in batches], 1), torch.cat([b.index for b in batches])

    dali, dali_index = collect("dali-cpu")
    pil, pil_index = collect("pil")
    assert dali_index.tolist() == pil_index.tolist() == list(range(N))
    for v in range(VIEWS):
        diff = (dali[v] - pil[v]).abs()
        assert diff.mean() <= 0.004 and diff.max() <= 0.08, (v, diff.max())
