"""The torchvision backend (decode_jpeg + torch resampling; nvJPEG on a GPU) against Pillow on
the CPU path it shares with the GPU, and against open_clip's own preprocessing.

Measured on test_decode_support.SIZES (normalised units; one 8-bit level is about 0.015):
decoding is bit-equal to Pillow's (both libjpeg-turbo); the resampling is torch's antialiased
bicubic in float, rounded to 8 bits once where Pillow rounds after each of its two passes:
max abs 0.060, mean abs 0.0023 on every view (DALI's figures). Asserted with a margin.
"""

from __future__ import annotations

import pytest
import torch
from test_decode_backends import (  # noqa: F401, F811
    assert_matches_pil,
    collect,
    jpegs,
    labeled,
    reference,
)

from shards.decode import BACKENDS, make_loader, resolve_backend

TV_MAX_ABS, TV_MEAN_ABS = 0.08, 0.004


def test_torchvision_is_a_backend_and_resolves_without_dali(monkeypatch):
    assert "torchvision" in BACKENDS
    monkeypatch.setattr("shards.decode.HAS_DALI", False, raising=False)
    assert resolve_backend("torchvision") == "torchvision"


def test_torchvision_matches_pil_on_every_view(labeled):  # noqa: F811
    assert_matches_pil(labeled, "torchvision", 1, TV_MAX_ABS, TV_MEAN_ABS)


def test_torchvision_matches_open_clip(labeled, reference):  # noqa: F811
    images, index = collect(make_loader(labeled, backend="torchvision", batch_size=4, workers=1))
    assert index.tolist() == list(range(len(reference)))
    diff = (images[0] - reference).abs()
    assert diff.max() <= TV_MAX_ABS and diff.mean() <= TV_MEAN_ABS


def test_views_do_not_depend_on_the_batch_size(labeled):  # noqa: F811
    a, _ = collect(make_loader(labeled, backend="torchvision", batch_size=3, views=2, seed=1))
    b, _ = collect(make_loader(labeled, backend="torchvision", batch_size=7, views=2, seed=1))
    assert torch.equal(a, b)


def test_a_damaged_jpeg_batch_falls_back_to_pillow(tmp_path):
    from test_decode_support import sample_jpegs, write_shards

    damaged = sample_jpegs(4)
    damaged[2] = damaged[2][: len(damaged[2]) // 2]  # truncated: decode_jpeg refuses it
    write_shards(tmp_path, damaged, shard_size=4)
    loader = make_loader(tmp_path, backend="torchvision", batch_size=4, workers=1)
    images, index = collect(loader)
    assert index.tolist() == [0, 1, 2, 3] and torch.isfinite(images).all()
    assert len(loader.fallback_keys) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_nvjpeg_on_the_gpu_matches_pil(labeled):  # noqa: F811
    tv, _ = collect(make_loader(labeled, backend="torchvision", batch_size=5, views=2, seed=4,
                                device=torch.device("cuda")))  # fmt: skip
    pil, _ = collect(make_loader(labeled, backend="pil", batch_size=5, views=2, seed=4, workers=0))
    assert tv.is_cuda
    diff = (tv.cpu() - pil).abs()
    assert diff.max() <= 0.2 and diff.mean() <= 0.01  # nvJPEG's IDCT differs from libjpeg's
