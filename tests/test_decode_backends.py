"""Each decode backend against open_clip's own preprocessing, and against each other.

Measured tolerances (normalised units, i.e. after OpenAI mean/std; one 8-bit level is
about 0.015), on the odd sizes of test_decode_support.SIZES:
    pil      vs open_clip: exact (max abs 0).
    dali-cpu vs open_clip: max abs 0.060, mean abs 0.0023 (DALI resamples in float where
             Pillow rounds to 8 bits between its two passes; decoding itself is identical:
             an image needing no resize comes out bit-equal).
Asserted with a margin: max abs <= 0.08, mean abs <= 0.004.
"""

from __future__ import annotations

import io

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from test_decode_support import sample_jpegs, write_shards

import shards.decode as decode
from engine.errors import UserError
from shards.decode import make_loader
from shards.decode.catalog import load_catalog

N, SHARD_SIZE = 14, 5
DALI_MAX_ABS, DALI_MEAN_ABS = 0.08, 0.004
needs_dali = pytest.mark.skipif(not decode.HAS_DALI, reason="DALI is not installed")


@pytest.fixture(scope="module")
def jpegs():
    return sample_jpegs(N)


@pytest.fixture(scope="module")
def labeled(tmp_path_factory, jpegs):
    out = tmp_path_factory.mktemp("labeled")
    write_shards(out, jpegs, shard_size=SHARD_SIZE, labels=[i % 3 for i in range(N)])
    return out


@pytest.fixture(scope="module")
def reference(jpegs):
    """open_clip's own ViT-B-32 eval preprocessing of every JPEG: (N, 3, 224, 224)."""
    _, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    return torch.stack([preprocess(Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs])


def collect(loader):
    """(images (V, n, 3, 224, 224), index (n,)) of a whole pass, checking batch contracts."""
    batches = list(loader)
    for b in batches:
        assert b.images.dtype == loader.output_dtype == torch.float32
        assert b.images.shape[0] == loader.output_shape[0]
        assert b.images.shape[2:] == loader.output_shape[2:] == (3, 224, 224)
        assert b.index.dtype == torch.int64 and b.index.shape == (b.images.shape[1],)
        assert b.images.shape[1] <= loader.output_shape[1]
    return torch.cat([b.images for b in batches], 1), torch.cat([b.index for b in batches])


def test_pil_backend_equals_open_clip_exactly(labeled, reference):
    loader = make_loader(labeled, backend="pil", batch_size=4, workers=0)
    images, index = collect(loader)
    assert loader.backend == "pil" and len(loader) == N
    assert index.tolist() == list(range(N))
    assert torch.equal(images[0], reference)


@needs_dali
def test_dali_cpu_matches_open_clip_within_tolerance(labeled, reference):
    loader = make_loader(labeled, backend="dali-cpu", batch_size=4, workers=2)
    images, index = collect(loader)
    assert loader.backend == "dali-cpu" and len(loader) == N
    assert index.tolist() == list(range(N))
    diff = (images[0] - reference).abs()
    assert diff.max() <= DALI_MAX_ABS and diff.mean() <= DALI_MEAN_ABS
    assert diff.max() > 0  # resampling differs; if this ever becomes exact, tighten the docs


def assert_matches_pil(shards, backend: str, workers: int, max_abs: float, mean_abs: float):
    """Every view of `backend` against Pillow's, same samples in the same order."""
    fast, i1 = collect(
        make_loader(shards, backend=backend, batch_size=5, views=3, seed=4, workers=workers)
    )
    pil, i2 = collect(make_loader(shards, backend="pil", batch_size=5, views=3, seed=4, workers=0))
    assert torch.equal(i1, i2)
    for v in range(3):
        diff = (fast[v] - pil[v]).abs()
        assert diff.max() <= max_abs and diff.mean() <= mean_abs, (v, diff.max(), diff.mean())


@needs_dali
def test_dali_cpu_matches_pil_on_every_view(labeled):
    assert_matches_pil(labeled, "dali-cpu", 2, DALI_MAX_ABS, DALI_MEAN_ABS)


@pytest.mark.parametrize("backend", ["pil", pytest.param("dali-cpu", marks=needs_dali)])
def test_views_independent_of_batch_size_and_workers(labeled, backend):
    a, ia = collect(
        make_loader(
            labeled,
            backend=backend,
            batch_size=4,
            views=3,
            seed=9,
            workers=0 if backend == "pil" else 1,
        )
    )
    b, ib = collect(make_loader(labeled, backend=backend, batch_size=3, views=3, seed=9, workers=2))
    one, _ = collect(make_loader(labeled, backend=backend, batch_size=6, views=1, workers=1))
    assert torch.equal(ia, ib)
    assert torch.equal(a, b)
    assert torch.equal(a[0], one[0])  # view 0 is the eval view whatever V is
    assert not torch.equal(a[1], a[2])  # training views differ from each other...
    assert not torch.equal(a[1], a[0])  # ...and from the eval view
    other_seed, _ = collect(
        make_loader(labeled, backend=backend, batch_size=4, views=2, seed=10, workers=1)
    )
    assert torch.equal(other_seed[0], a[0]) and not torch.equal(other_seed[1], a[1])


@pytest.mark.parametrize("backend", ["pil", pytest.param("dali-cpu", marks=needs_dali)])
def test_two_ranks_cover_every_index_once(labeled, backend):
    seen = []
    for rank in range(2):
        loader = make_loader(
            labeled, backend=backend, batch_size=4, rank=rank, world_size=2, workers=1
        )
        _, index = collect(loader)
        assert len(loader) == len(index)
        # rank 0 owns shards 0 and 2 (indices 0-4, 10-13), rank 1 shard 1 (5-9)
        shards_of = {int(i) // SHARD_SIZE for i in index}
        assert shards_of == ({0, 2} if rank == 0 else {1})
        seen += index.tolist()
    assert sorted(seen) == list(range(N))


@pytest.mark.parametrize("backend", ["pil", pytest.param("dali-cpu", marks=needs_dali)])
def test_shard_filter_keeps_global_indices(labeled, backend):
    """A resumed feature pass decodes only unfinished shards, at their global indices."""
    full, _ = collect(make_loader(labeled, backend=backend, batch_size=4, workers=1))
    loader = make_loader(labeled, backend=backend, batch_size=4, workers=1, shard_ids=[1, 2])
    images, index = collect(loader)
    assert len(loader) == N - SHARD_SIZE
    assert index.tolist() == list(range(SHARD_SIZE, N))
    assert torch.equal(images, full[:, SHARD_SIZE:])


@pytest.mark.parametrize("backend", ["pil", pytest.param("dali-cpu", marks=needs_dali)])
def test_unlabeled_shards(tmp_path, jpegs, reference, backend):
    write_shards(tmp_path, jpegs[:6], shard_size=4, labels=None)
    images, index = collect(make_loader(tmp_path, backend=backend, batch_size=4, workers=1))
    assert index.tolist() == list(range(6))
    diff = (images[0] - reference[:6]).abs()
    assert diff.max() <= (0 if backend == "pil" else DALI_MAX_ABS)


def test_catalog_without_index_files_equals_catalog_with(tmp_path, labeled, jpegs):
    write_shards(tmp_path, jpegs, shard_size=SHARD_SIZE, labels=[0] * N, with_index=False)
    scanned, indexed = load_catalog(tmp_path), load_catalog(labeled)
    assert scanned.keys == indexed.keys == [f"img_{i:05d}" for i in range(N)]
    assert np.array_equal(scanned.offsets, indexed.offsets)
    assert np.array_equal(scanned.sizes, indexed.sizes)
    assert [scanned.read(i) for i in range(N)] == jpegs


def test_backend_resolution(monkeypatch, labeled):
    monkeypatch.setattr(decode, "HAS_DALI", False)
    assert decode.resolve_backend("auto") == "pil"
    assert make_loader(labeled, workers=0).backend == "pil"
    with pytest.raises(UserError, match="dali-cpu"):
        decode.resolve_backend("dali-cpu")
    monkeypatch.setattr(decode, "HAS_DALI", True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert decode.resolve_backend("auto") == "dali-cpu"
    with pytest.raises(UserError, match="CUDA"):
        decode.resolve_backend("dali-gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert decode.resolve_backend("auto") == "dali-gpu"
    with pytest.raises(UserError, match="choose one of auto, dali-gpu, dali-cpu, pil"):
        decode.resolve_backend("nvjpeg")


def test_bad_arguments(labeled):
    with pytest.raises(UserError, match="batch_size"):
        make_loader(labeled, batch_size=0)
    with pytest.raises(UserError, match="rank 2"):
        make_loader(labeled, rank=2, world_size=2)


@pytest.mark.gpu
@needs_dali
def test_dali_gpu_matches_open_clip_within_tolerance(labeled, reference):
    loader = make_loader(labeled, backend="dali-gpu", batch_size=4, views=2, workers=2)
    images, index = collect(loader)
    assert images.is_cuda and loader.backend == "dali-gpu"
    assert index.tolist() == list(range(N))
    diff = (images[0].cpu() - reference).abs()
    # nvJPEG's IDCT differs from libjpeg-turbo's on top of the resampling differences.
    assert diff.max() <= 0.2 and diff.mean() <= 0.01
    cpu, _ = collect(make_loader(labeled, backend="dali-cpu", batch_size=4, views=2, workers=2))
    assert (images[1].cpu() - cpu[1]).abs().mean() <= 0.01


def test_reads_shards_written_by_pack(tmp_path, jpegs, reference):
    """The real `engine shard` writer's output decodes to open_clip's preprocessing."""
    from shards import writer
    from shards.config import ShardConfig

    for c in range(2):
        (tmp_path / "src" / f"class{c}").mkdir(parents=True)
    for i, jpeg in enumerate(jpegs[:6]):
        (tmp_path / "src" / f"class{i % 2}" / f"{i:02d}.jpg").write_bytes(jpeg)
    cfg = ShardConfig(shard_size=4, short_side=None, workers=1)
    manifest = writer.pack(tmp_path / "src", tmp_path / "out", cfg)
    images, index = collect(make_loader(tmp_path / "out", backend="pil", batch_size=4, workers=0))
    assert index.tolist() == list(range(manifest["num_samples"])) == list(range(6))
    # pack orders samples by class then file name: class0 = 0, 2, 4; class1 = 1, 3, 5
    assert torch.equal(images[0], reference[[0, 2, 4, 1, 3, 5]])
