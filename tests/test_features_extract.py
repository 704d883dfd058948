"""The whole feature pass: shards -> decode -> trunk -> store; resume; 1 vs 2 processes.

Most tests use `tiny_clip` (same token grid as ViT-B/32, width 64) so they take seconds; the
comparison with open_clip on the original image files uses the real ViT-B/32 (random weights).
"""

from __future__ import annotations

import copy
import os
import shutil
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clip_helpers import shared_random_clip, write_images
from PIL import Image

from bench.tiny_clip import TINY_MODEL, tiny_clip
from engine.errors import UserError
from features import runner as runner_module
from features.config import FeatureConfig
from features.extract import default_chunk_n, extract
from features.meta import read_shard_meta
from features.store import FORMAT, open_store, progress_dir
from shards.config import ShardConfig
from shards.decode.pil import decode_views
from shards.reader import iter_samples, shard_files
from shards.writer import pack

SHARD_SIZE = 4  # 10 images -> shards of 4, 4, 2; chunks of 2 rows


pytestmark = pytest.mark.usefixtures("one_blas_thread")


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    root = tmp_path_factory.mktemp("labeled")
    write_images(root / "src", {"oak": 5, "red_fox": 5})
    pack(root / "src", root / "shards", ShardConfig(shard_size=SHARD_SIZE, workers=1))
    return root / "shards"


def make_cfg(**overrides) -> FeatureConfig:
    fields = dict(
        depth=2, views=2, weights="random", backend="pil", workers=0, chunk_n=2, batch_size=2
    )
    return FeatureConfig(**(fields | overrides))


def run_tiny(shards, out, **overrides):
    return extract(shards, out, make_cfg(**overrides), clip_loader=tiny_clip)


@pytest.fixture(scope="module")
def reference(labeled, tmp_path_factory):
    """The 1-process store every other run is compared with."""
    return run_tiny(labeled, tmp_path_factory.mktemp("ref") / "train.zarr")


def assert_same_store(a, b):
    a, b = open_store(a, model=TINY_MODEL), open_store(b, model=TINY_MODEL)
    assert a.keys == b.keys and a.paths == b.paths
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.embed[:], b.embed[:])
    for view in range(a.views):
        np.testing.assert_array_equal(a.tokens[view], b.tokens[view])
    assert {k: v for k, v in a.attrs.items()} == {k: v for k, v in b.attrs.items()}


def test_store_holds_every_sample_in_store_order(labeled, reference):
    store = open_store(reference, model=TINY_MODEL)
    samples = list(iter_samples(labeled))
    assert store.keys == [s.key for s in samples]
    assert store.paths == [s.meta["path"] for s in samples]
    assert store.labels.tolist() == [s.label for s in samples] == [0] * 5 + [1] * 5
    assert set(store.attrs) == {
        "format", "model", "weights", "depth", "classes", "views", "preprocess", "source",
        "complete", "decode_fallbacks",
    }  # fmt: skip
    assert store.attrs["format"] == FORMAT and store.attrs["model"] == TINY_MODEL
    assert store.attrs["weights"] == {"name": "random", "sha256": None}
    assert store.classes == ["oak", "red_fox"] and store.depth == 2 and store.views == 2
    assert store.attrs["preprocess"]["name"] == "open_clip ViT-B-32 eval"
    assert store.attrs["complete"] is True and store.attrs["decode_fallbacks"] == []
    assert store.group["tokens"].shape == (2, 10, 50, 64)
    norms = np.linalg.norm(store.embed[:].astype(np.float32), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)
    assert not progress_dir(reference).exists()


def test_tokens_and_embed_equal_a_direct_pass(labeled, reference):
    """Row i = the trunk (and the whole model, for `embed`) on sample i's decoded views."""
    store = open_store(reference, model=TINY_MODEL)
    visual = tiny_clip().model.visual
    trunk = runner_module.TrunkRunner(visual, 2, torch.device("cpu")).trunk
    samples = {s.index: s for s in iter_samples(labeled)}
    for i in (0, 7):
        views, _ = decode_views(samples[i].jpeg, samples[i].key, index=i, seed=0, views=2)
        with torch.no_grad():
            tokens = trunk(views)  # (V, 50, 64)
            full = F.normalize(visual(views[:1]), dim=-1)  # (1, 32)
        for view in range(2):
            np.testing.assert_allclose(
                store.tokens[view, [i]][0].astype(np.float32), tokens[view], atol=2e-3, rtol=2e-3
            )
        np.testing.assert_allclose(store.embed[[i]][0].astype(np.float32), full[0], atol=2e-3)
    assert not np.array_equal(store.tokens[0, [3]], store.tokens[1, [3]])  # view 1 is a crop


def test_padded_short_batch_gives_the_rows_it_would_alone():
    """With pad_batches (on whenever the trunk is compiled), a short last batch is run at the
    full batch's shape; its rows equal an unpadded pass and the padding is cut off."""
    images = torch.randn(2, 5, 3, 224, 224)  # (V, B, ...)
    padded = runner_module.TrunkRunner(tiny_clip().model.visual, 2, torch.device("cpu"),
                                       pad_batches=True)  # fmt: skip
    plain = runner_module.TrunkRunner(tiny_clip().model.visual, 2, torch.device("cpu"))
    assert not plain.pad_batches  # off unless compiling
    seen = []
    padded.trunk_fn = lambda x: seen.append(x.shape[0]) or padded.trunk(x)
    padded(images)  # a full batch: 10 rows
    embed, tokens = padded(images[:, :3])  # the short last batch: 6 rows, run as 10
    want_embed, want_tokens = plain(images[:, :3])
    assert seen == [10, 10] and tokens.shape == (2, 3, 50, 64)
    np.testing.assert_allclose(tokens, want_tokens, atol=1e-3)
    np.testing.assert_allclose(embed, want_embed, atol=1e-3)


def test_embeddings_equal_open_clip_on_the_original_files(tmp_path):
    """The real ViT-B/32: store embeddings vs open_clip's own preprocess + encode_image."""
    files = write_images(tmp_path / "src", 3, size=(300, 260))
    pack(tmp_path / "src", tmp_path / "shards", ShardConfig(shard_size=SHARD_SIZE, workers=1))
    clip = shared_random_clip()
    cfg = make_cfg(depth=1, views=1, backend="auto", workers=1, chunk_n=None, batch_size=3)
    out = extract(tmp_path / "shards", tmp_path / "test.zarr", cfg, clip_loader=lambda w, d: clip)
    store = open_store(out)
    assert store.labels.tolist() == [-1, -1, -1] and store.classes == []  # unlabeled split
    by_path = dict(zip(store.paths, store.embed[:].astype(np.float32), strict=True))
    images = torch.stack([clip.preprocess(Image.open(f)) for f in files])  # (3, 3, 224, 224)
    with torch.no_grad():
        direct = F.normalize(clip.model.encode_image(images), dim=-1).numpy()  # (3, 512)
    cosine = [float(by_path[f.name] @ d) for f, d in zip(files, direct, strict=True)]
    assert min(cosine) >= 0.999, cosine


def test_unlabeled_split_stores_minus_one(tmp_path):
    write_images(tmp_path / "src", 3)
    pack(tmp_path / "src", tmp_path / "shards", ShardConfig(shard_size=SHARD_SIZE, workers=1))
    store = open_store(run_tiny(tmp_path / "shards", tmp_path / "u.zarr"), model=TINY_MODEL)
    assert store.group["labels"].dtype == np.int32 and store.labels.tolist() == [-1, -1, -1]
    assert store.classes == [] and store.paths == ["img_0.jpg", "img_1.jpg", "img_2.jpg"]


class Killed(Exception):
    """Stands in for SIGKILL / Ctrl-C in the middle of a run."""


def killing_loader(after_batches: int):
    from shards.decode import make_loader

    def factory(shard_dir, **kwargs):
        loader = make_loader(shard_dir, **kwargs)

        class Dying:
            def __len__(self):
                return len(loader)

            def __iter__(self):
                for n, batch in enumerate(loader):
                    if n == after_batches:
                        raise Killed
                    yield batch

        return Dying()

    return factory


def count_computed_rows(monkeypatch) -> list[int]:
    computed = []
    original = runner_module.TrunkRunner.submit

    def counting(self, images):
        computed.append(images.shape[1])
        return original(self, images)

    monkeypatch.setattr(runner_module.TrunkRunner, "submit", counting)
    return computed


def test_resume_after_a_kill_gives_the_same_store(labeled, reference, tmp_path, monkeypatch):
    out = tmp_path / "train.zarr"
    with pytest.raises(Killed):  # dies after 3 batches (6 of 10 rows, chunks 0-2 written)
        extract(labeled, out, make_cfg(), clip_loader=tiny_clip, loader_factory=killing_loader(3))
    with pytest.raises(UserError, match="unfinished"):
        open_store(out, model=TINY_MODEL)
    partial = open_store(out, model=TINY_MODEL, require_complete=False)
    assert partial.done_chunks() == {0, 1, 2}
    # A kill between a chunk's data and its marker: that chunk is simply redone.
    (progress_dir(out) / "chunk-000002.done").unlink()

    computed = count_computed_rows(monkeypatch)
    decoded = []

    def counting_loader(shard_dir, **kwargs):
        from shards.decode import make_loader

        loader = make_loader(shard_dir, **kwargs)
        decoded.append(len(loader))
        return loader

    extract(labeled, out, make_cfg(), clip_loader=tiny_clip, loader_factory=counting_loader)
    assert sum(computed) == 6  # chunks 2, 3, 4 only
    assert decoded == [6]  # shard 0 (chunks 0, 1) is done and not even decoded again
    assert_same_store(out, reference)


def test_complete_store_is_reused_and_other_settings_need_force(
    labeled, reference, tmp_path, monkeypatch
):
    out = tmp_path / "train.zarr"
    shutil.copytree(reference, out)
    computed = count_computed_rows(monkeypatch)
    run_tiny(labeled, out)
    assert computed == []
    run_tiny(labeled, out, depth=1)  # a depth-2 store serves depth 1
    assert computed == []
    with pytest.raises(UserError, match="views differ.*--force"):
        run_tiny(labeled, out, views=1)
    run_tiny(labeled, out, views=1, force=True)
    assert sum(computed) == 10 and open_store(out, model=TINY_MODEL).views == 1


def test_depth_zero_keeps_only_the_embedding(labeled, reference, tmp_path):
    store = open_store(run_tiny(labeled, tmp_path / "d0.zarr", depth=0), model=TINY_MODEL)
    assert "tokens" not in store.group and store.views == 1 and store.depth == 0
    full = open_store(reference, model=TINY_MODEL)
    np.testing.assert_allclose(
        store.embed[:].astype(np.float32), full.embed[:].astype(np.float32), atol=1e-3
    )


def test_chunk_size_must_divide_the_shard_size(labeled, tmp_path):
    with pytest.raises(UserError, match="chunk_n 3 does not divide the shard size 4"):
        run_tiny(labeled, tmp_path / "x.zarr", chunk_n=3)
    assert [default_chunk_n(s) for s in (1024, 1000, 300, 7, 4)] == [256, 250, 150, 7, 4]


def test_metadata_without_index_files_equals_with(labeled):
    for shard in shard_files(labeled):
        with_idx = read_shard_meta(shard.tar, shard.idx, shard.offset, shard.count)
        without = read_shard_meta(shard.tar, None, shard.offset, shard.count)
        assert with_idx == without and len(with_idx.keys) == shard.count
    with pytest.raises(UserError, match="manifest says 5"):
        read_shard_meta(shard.tar, shard.idx, shard.offset, 5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, shards, out) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
    )  # fmt: skip
    torch.set_num_threads(1)
    extract(shards, out, make_cfg(device="cpu"), clip_loader=tiny_clip)


def test_two_processes_write_the_same_store_as_one(labeled, reference, tmp_path):
    """torchrun-style: gloo, rank r owns shards s % 2 == r, one shared store."""
    import torch.multiprocessing as mp

    out = tmp_path / "dist.zarr"
    mp.spawn(_rank_main, args=(2, _free_port(), labeled, out), nprocs=2, join=True)
    assert_same_store(out, reference)


def test_rank0_errors_reach_the_caller():
    from features.distributed import DistContext

    ctx = DistContext()
    assert ctx.on_rank0(lambda: "made") == "made" and ctx.gather(3) == [3]

    def refuse():
        raise UserError("store exists with other settings")

    with pytest.raises(UserError, match="other settings"):
        ctx.on_rank0(refuse)


@pytest.mark.gpu
def test_bf16_trunk_on_gpu_matches_fp32_on_cpu():
    clip = shared_random_clip()
    images = torch.randn(1, 4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    cpu = runner_module.TrunkRunner(copy.deepcopy(clip.model.visual), 2, torch.device("cpu"))
    gpu = runner_module.TrunkRunner(copy.deepcopy(clip.model.visual), 2, torch.device("cuda"))
    embed_cpu, tokens_cpu = cpu(images)
    embed_gpu, tokens_gpu = gpu(images)
    cos = (embed_cpu.astype(np.float32) * embed_gpu.astype(np.float32)).sum(1)
    assert cos.min() >= 0.99, cos
    a, b = tokens_cpu.astype(np.float32).ravel(), tokens_gpu.astype(np.float32).ravel()
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) >= 0.99


def test_samples_the_decoder_had_to_repair_are_named_in_the_store(labeled, tmp_path):
    """DALI re-decodes a failed batch with Pillow and lists those keys; the store keeps them."""
    from shards.decode import make_loader

    def repairing_loader(shard_dir, **kwargs):
        loader = make_loader(shard_dir, **kwargs)
        loader.fallback_keys = [iter_samples(labeled).__next__().key]
        return loader

    out = extract(
        labeled, tmp_path / "f.zarr", make_cfg(), clip_loader=tiny_clip,
        loader_factory=repairing_loader,
    )  # fmt: skip
    store = open_store(out, model=TINY_MODEL)
    assert store.attrs["decode_fallbacks"] == [store.keys[0]]
    assert len(store.keys) == 10  # nothing dropped
