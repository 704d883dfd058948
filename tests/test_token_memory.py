"""The token memory plan: decisions at 300k images, capacities, and training from every placement."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from heads_helpers import features_from_images, tiny_visual

from features.store import FeatureStore, StoreSpec
from heads import memory
from heads import tensors as T
from heads.config import TrainConfig
from heads.token_tables import HostChunks, StreamedTokens
from heads.trainer import fit

GB = 10**9
HOST_128 = 120 * GB  # MemAvailable of a 128 GB host with the OS and a Python process running
# (GPU free bytes, views) -> where, at 300k images (23.04 GB of tokens per view)
EXPECTED = {
    80 * GB: ["gpu", "gpu", "pinned", "stream", "stream", "stream", "stream", "stream"],
    141 * GB: ["gpu", "gpu", "gpu", "gpu", "gpu", "stream", "stream", "stream"],
}


def _pow2_ceil(x: int) -> int:
    return 1 << (x - 1).bit_length()


@pytest.mark.parametrize("gpu_free", sorted(EXPECTED))
@pytest.mark.parametrize("views", range(1, 9))
def test_plan_at_300k_images_fits_what_it_chooses(gpu_free, views):
    plan = memory.plan_tokens(300_000, views, gpu_free_bytes=gpu_free, host_free_bytes=HOST_128)
    assert plan.table_bytes == 300_000 * views * 50 * 768 * 2
    assert plan.where == EXPECTED[gpu_free][views - 1], plan.reason
    if plan.where == "gpu":  # the table leaves training its headroom on the device
        assert plan.table_bytes + memory.GPU_HEADROOM <= gpu_free
    if plan.where == "pinned":
        assert plan.pin
        row = 50 * 768 * 2
        chunk = plan.chunk_rows * row
        assert _pow2_ceil(chunk) - chunk < row  # power-of-two rounding wastes < one row
        chunks = -(-plan.table_bytes // chunk)
        assert chunks * _pow2_ceil(chunk) <= memory.HOST_FRACTION * HOST_128
        # the one-allocation pin this replaces would have asked for more than the host has
        assert _pow2_ceil(plan.table_bytes) > HOST_128
    if plan.where == "stream":
        assert plan.table_bytes > memory.HOST_FRACTION * HOST_128 and plan.prefetch >= 1


def test_plan_without_cuda_never_chooses_the_gpu_nor_pins():
    plan = memory.plan_tokens(1000, 2, gpu_free_bytes=10**12, host_free_bytes=10**12, cuda=False)
    assert (plan.where, plan.pin, plan.chunk_rows) == ("pinned", False, 2000)
    tiny_host = memory.plan_tokens(1000, 2, gpu_free_bytes=0, host_free_bytes=1, cuda=False)
    assert tiny_host.where == "stream"


def test_plan_force_and_its_validation():
    plan = memory.plan_tokens(10, 1, gpu_free_bytes=10**12, host_free_bytes=10**12, force="stream")
    assert plan.where == "stream" and "forced" in plan.reason
    with pytest.raises(ValueError, match="gpu.*pinned.*stream"):
        memory.plan_tokens(10, 1, gpu_free_bytes=0, host_free_bytes=0, force="disk")


def test_gpu_free_counts_torchs_cached_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (30 * GB, 80 * GB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 45 * GB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 5 * GB)
    assert memory.gpu_free_bytes("cuda:0") == 70 * GB  # 30 free + 40 cached, unallocated
    assert memory.gpu_free_bytes("cpu") == 0
    # a 46 GB table (300k x 2) fits only because the cached 40 GB count
    plan = memory.plan_tokens(300_000, 2, gpu_free_bytes=70 * GB, host_free_bytes=HOST_128)
    assert plan.where == "gpu"


def test_host_available_reads_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  131072000 kB\nMemFree:  1000 kB\nMemAvailable:  125000000 kB\n")
    assert memory.host_available_bytes(meminfo) == 125_000_000 * 1024
    assert memory.host_available_bytes(tmp_path / "absent") > 0  # sysconf fallback


# ---------------------------------------------------------------------- tables and training
CLASSES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """24 samples, 2 views, depth 2, in an uncompressed store of 5-row chunks (last one short)."""
    visual = tiny_visual()
    images = torch.randn(24, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    data = features_from_images(visual, images, np.arange(24) % 4, CLASSES, depth=2, views=2)
    path = tmp_path_factory.mktemp("mem") / "train.zarr"
    spec = StoreSpec(
        n=24, chunk_n=5, depth=2, views=2, classes=CLASSES, weights={"name": "random"},
        preprocess={}, token_shape=data.tokens.shape[2:], embed_dim=16,
    )  # fmt: skip
    store = FeatureStore.create(path, spec)
    for c in range(store.num_chunks):
        r = store.chunk_rows(c)
        store.write_chunk(
            c, keys=data.keys[r], paths=data.paths[r], labels=data.labels[r],
            embed=data.embed[r], tokens=data.tokens[:, r],
        )  # fmt: skip
    store.mark_complete()
    return visual, path, data


def _force(monkeypatch, where: str, **fields):
    plan_tokens = memory.plan_tokens

    def forced(*args, **kwargs):
        return dataclasses.replace(plan_tokens(*args, **kwargs, force=where), **fields)

    monkeypatch.setattr(memory, "plan_tokens", forced)


def _cfg(k: int):
    return TrainConfig(
        unfreeze_last=k, epochs_lp=1, epochs_ft=2, batch_size=7, lr_tail=1e-3, views=None
    )


def _losses(model) -> list[float]:
    return [m["loss"] for m in model.history]


@pytest.mark.parametrize("k", [2, 1])  # k = 1 also advances the depth-2 store by one block
def test_streamed_and_chunked_epochs_give_the_resident_losses(tiny_store, monkeypatch, k):
    visual, path, _ = tiny_store
    resident = fit(path, _cfg(k), clip=visual)
    _force(monkeypatch, "pinned", chunk_rows=7)  # 48 flat rows in 7 chunks, across the views
    chunked = fit(path, _cfg(k), clip=visual)
    monkeypatch.undo()
    monkeypatch.setattr(
        memory,
        "free_capacities",
        lambda device: {"gpu_free_bytes": 0, "host_free_bytes": 0, "cuda": False},
    )  # fmt: skip  (no room anywhere: the planner itself chooses to stream)
    streamed = fit(path, _cfg(k), clip=visual)
    # the same fp16 tokens in the same order through the same block shapes: the same numbers
    assert _losses(chunked) == _losses(resident)
    assert np.array_equal(chunked.predict_logits(path), resident.predict_logits(path))
    if k == 2:
        assert _losses(streamed) == _losses(resident)
    else:  # the frozen block runs per batch when streamed (per 24-row block when resident):
        # equal here, but a BLAS may round matrices of other shapes apart in the last bit
        np.testing.assert_allclose(_losses(streamed), _losses(resident), rtol=1e-6)
    np.testing.assert_allclose(
        streamed.predict_logits(path), resident.predict_logits(path), rtol=1e-6, atol=1e-6
    )


def test_loaded_tables_hold_the_store_rows(tiny_store, monkeypatch):
    _, path, data = tiny_store
    from features.store import open_store

    tokens = open_store(path, model=None).tokens
    rows = np.array([3, 4, 5, 11, 12, 20, 23, 0])
    expected = torch.from_numpy(data.tokens[:, rows])  # (2, 8, L, W)
    plain = T.load_tokens(tokens, rows, 2, torch.device("cpu"))
    assert torch.is_tensor(plain) and torch.equal(plain, expected)
    _force(monkeypatch, "pinned", chunk_rows=3)
    chunked = T.load_tokens(tokens, rows, 2, torch.device("cpu"))
    assert isinstance(chunked, HostChunks) and len(chunked.chunks) == 6
    assert torch.equal(torch.cat(chunked.chunks).view(expected.shape), expected)
    view_of, pick = torch.tensor([1, 0] * 4), torch.tensor([7, 0, 5, 5, 2, 6])
    want = expected[view_of[pick], pick]
    assert torch.equal(chunked.gather(view_of, pick, torch.device("cpu")), want)
    streamed = StreamedTokens(tokens, rows, views=2, prefetch=2)
    assert torch.equal(streamed.gather(view_of, pick, torch.device("cpu")), want)
    perm = torch.tensor([4, 1, 7, 0, 2, 6, 3, 5])
    streamed.begin_epoch(perm, view_of, batch_size=3)
    for lo in range(0, 8, 3):
        batch = perm[lo : lo + 3]
        got = streamed.gather(view_of, batch, torch.device("cpu"))
        assert torch.equal(got, expected[view_of[batch], batch])
    streamed.begin_epoch(perm, view_of, batch_size=3)
    with pytest.raises(RuntimeError, match="order"):
        streamed.gather(view_of, perm[3:6], torch.device("cpu"))
    streamed.end_epoch()


@pytest.mark.gpu
@pytest.mark.parametrize("where", ["gpu", "pinned", "stream"])
def test_every_placement_gathers_the_same_batches_on_the_gpu(tiny_store, monkeypatch, where):
    _, path, data = tiny_store
    from features.store import open_store

    device = T.resolve_device("cuda")
    rows = np.arange(24)
    _force(monkeypatch, where, chunk_rows=5, pin=where == "pinned")
    table = T.load_tokens(open_store(path, model=None).tokens, rows, 2, device)
    if where == "pinned":
        assert isinstance(table, HostChunks) and table.is_pinned()
    view_of, pick = torch.arange(24) % 2, torch.tensor([23, 0, 9, 10, 4])
    T.begin_epoch(table, pick, view_of, batch_size=5)
    got = T.gather_views(table, view_of.to(table.device), pick.to(table.device), device)
    expected = torch.from_numpy(data.tokens)[view_of[pick], pick]
    assert got.device == device and torch.equal(got.cpu(), expected)


@pytest.mark.gpu
def test_streamed_training_on_the_gpu_matches_resident(tiny_store, monkeypatch):
    visual, path, _ = tiny_store
    cfg = dataclasses.replace(_cfg(2), device="cuda")
    resident = fit(path, cfg, clip=visual)
    _force(monkeypatch, "stream")
    streamed = fit(path, cfg, clip=visual)
    np.testing.assert_allclose(_losses(streamed), _losses(resident), rtol=1e-5)
