"""Device placement and precision paths of the head trainer (GPU-only checks are marked gpu)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from heads_helpers import features_from_images, tiny_visual

from heads import tensors as T
from heads.config import TrainConfig
from heads.epoch import fp32_head
from heads.head import make_head
from heads.trainer import fit

CPU = torch.device("cpu")


def test_resolve_device_gives_cuda_an_index(monkeypatch):
    assert T.resolve_device("cpu") == CPU
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    # "cuda" != "cuda:3" for torch, while tensors placed there report cuda:3
    assert T.resolve_device("cuda") == torch.device("cuda", 3)
    assert T.resolve_device("cuda:1") == torch.device("cuda", 1)


def test_same_device_treats_bare_cuda_as_the_current_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    cuda, cuda0, cuda1 = torch.device("cuda"), torch.device("cuda:0"), torch.device("cuda:1")
    assert T.same_device(cuda, cuda0) and T.same_device(cuda0, cuda)
    assert not T.same_device(cuda, cuda1)
    assert not T.same_device(CPU, cuda0)
    assert T.same_device(CPU, torch.device("cpu"))


def test_map_chunks_inplace_matches_a_copy_and_reuses_the_table():
    table = torch.randn(2, 10, 3, 4).half()  # (V, n, L, W)
    expected = T.map_chunks(lambda x: x * 2 + 1, table.clone(), CPU, torch.float16, chunk=3)
    out = T.map_chunks(lambda x: x * 2 + 1, table, CPU, torch.float16, chunk=3, inplace=True)
    assert out is table  # no second table: what lets a GPU-sized token table be advanced
    assert torch.equal(out, expected)
    with pytest.raises(ValueError, match="out_dtype"):
        T.map_chunks(lambda x: x, table, CPU, torch.float32, inplace=True)


def test_load_tokens_on_the_cpu_reads_the_rows_in_order():
    tokens = np.arange(2 * 6 * 2 * 3, dtype=np.float32).reshape(2, 6, 2, 3)  # (V, N, L, W)
    rows = np.array([4, 1, 1])
    out = T.load_tokens(tokens, rows, views=2, device=CPU)
    assert out.dtype == torch.float16 and out.device == CPU and not out.is_pinned()
    assert torch.equal(out, torch.from_numpy(tokens[:, rows]).half())


def test_fp32_head_escapes_an_outer_bf16_autocast():
    # CPU bf16 autocast stands in for the GPU's: the head must still compute in fp32.
    head = make_head("cosine", 5, dim=16, temperature=0.05)
    head.reset_classifier(5, weight=torch.randn(5, 16, generator=torch.Generator().manual_seed(0)))
    x = torch.randn(8, 16)
    expected = head(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        in_bf16 = head(x)
        logits = fp32_head(head, CPU)(x)
    assert in_bf16.dtype == torch.bfloat16  # what the trainer used to get on the GPU
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)


@pytest.mark.gpu
def test_gather_views_on_the_gpu_with_an_index_less_device():
    device = torch.device("cuda")  # what a user's --device cuda means
    table = torch.randn(2, 7, 3, 4, device="cuda").half()
    view_of, rows = torch.tensor([0, 1, 0, 1, 0, 1, 0]), torch.tensor([6, 0, 3])
    got = T.gather_views(table, view_of.cuda(), rows.cuda(), T.resolve_device("cuda"))
    host = T.gather_views(table.cpu().pin_memory(), view_of, rows, device)
    expected = table[view_of[rows].cuda(), rows.cuda()]
    assert torch.equal(got, expected) and torch.equal(host, expected)


@pytest.mark.gpu
def test_tail_training_runs_on_the_gpu_and_predicts_like_the_cpu():
    visual = tiny_visual()
    images = torch.randn(24, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    data = features_from_images(visual, images, np.arange(24) % 4, ["a", "b", "c", "d"], 2, 2)
    cfg = dict(unfreeze_last=1, epochs_lp=1, epochs_ft=1, batch_size=8)
    gpu = fit(data, TrainConfig(device="cuda", **cfg), clip=visual)
    assert next(gpu.head.parameters()).device.type == "cuda"
    logits = gpu.predict_logits(data)
    assert logits.dtype == np.float32 and np.isfinite(logits).all()
    cpu = fit(data, TrainConfig(device="cpu", **cfg), clip=visual)
    np.testing.assert_allclose(logits, cpu.predict_logits(data), atol=0.1)


def test_float32_on_shares_float32_arrays_and_converts_the_rest():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    shared = T.float32_on(a, CPU)
    a[0, 0] = 7.0
    assert shared[0, 0].item() == 7.0  # no copy of a float32 array on the CPU
    converted = T.float32_on(np.arange(3), CPU)
    assert converted.dtype == torch.float32 and converted.tolist() == [0.0, 1.0, 2.0]
    assert T.float32_on(torch.ones(2, dtype=torch.float64), CPU).dtype == torch.float32
