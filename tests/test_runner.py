"""TrunkRunner: padded batches keep their memory format, the shared model stays trainable,
the overlapped loop gives the per-batch results, the trunk alone runs no tail."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.tiny_clip import tiny_clip
from features.runner import TrunkRunner, trunk_input

CPU = torch.device("cpu")


def test_padded_short_batch_keeps_the_full_batches_strides():
    """A compiled trunk recompiles on new strides: the padded batch must look like a full one."""
    full = torch.randn(10, 3, 64, 64)
    fast = trunk_input(full, 10, torch.channels_last)
    padded = trunk_input(full[:6], 10, torch.channels_last)
    assert padded.shape == fast.shape and padded.stride() == fast.stride()
    assert padded.is_contiguous(memory_format=torch.channels_last)
    assert not padded.is_contiguous()  # really channels_last, not the contiguous fallback
    torch.testing.assert_close(padded[:6], full[:6], rtol=0, atol=0)
    torch.testing.assert_close(padded[6:], full[5:6].expand(4, -1, -1, -1), rtol=0, atol=0)
    plain = trunk_input(full[:6], 10)
    assert plain.stride() == full.stride()  # NCHW stays NCHW


def test_runner_leaves_the_shared_model_trainable():
    """`engine bench` shares one model between the features and train stages."""
    visual = tiny_clip().model.visual
    runner = TrunkRunner(visual, 2, CPU)
    embed, tokens = runner.compute(torch.randn(1, 2, 3, 224, 224))
    assert all(p.requires_grad for p in visual.parameters())
    assert not embed.requires_grad and not tokens.requires_grad
    visual(torch.randn(2, 3, 224, 224)).sum().backward()
    assert all(p.grad is not None for p in visual.parameters())


def test_overlapped_gives_the_per_batch_results_in_order():
    runner = TrunkRunner(tiny_clip().model.visual, 2, CPU)
    gen = torch.Generator().manual_seed(0)
    batches = [
        (f"b{i}", torch.randn(2, n, 3, 224, 224, generator=gen)) for i, n in enumerate((4, 4, 3))
    ]
    got = list(runner.overlapped(iter(batches)))
    assert [tag for tag, _ in got] == ["b0", "b1", "b2"]
    for (_, images), (_, (embed, tokens)) in zip(batches, got, strict=True):
        want_embed, want_tokens = runner(images)
        assert embed.dtype == np.float16 and tokens.shape == (2, images.shape[1], 50, 64)
        np.testing.assert_array_equal(embed, want_embed)
        np.testing.assert_array_equal(tokens, want_tokens)


def test_overlapped_delivers_the_queued_batch_before_an_error():
    runner = TrunkRunner(tiny_clip().model.visual, 2, CPU, keep_tokens=False)

    def dying():
        yield "first", torch.randn(1, 2, 3, 224, 224)
        raise KeyboardInterrupt

    delivered = []
    with pytest.raises(KeyboardInterrupt):
        for tag, (embed, tokens) in runner.overlapped(dying()):
            delivered.append((tag, embed.shape, tokens))
    assert delivered == [("first", (2, 32), None)]


def test_trunk_tokens_run_the_trunk_only(monkeypatch):
    """What the bench's "trunk 10/12 blocks" row times: no tail blocks."""
    runner = TrunkRunner(tiny_clip().model.visual, 2, CPU)
    monkeypatch.setattr(runner, "tail", lambda x: pytest.fail("the tail ran"))
    images = torch.randn(2, 3, 3, 224, 224)
    tokens = runner.trunk_tokens(images)
    with torch.no_grad():
        want = runner.trunk(images.flatten(0, 1))  # (6, 50, 64)
    torch.testing.assert_close(tokens, want, rtol=0, atol=0)


@pytest.mark.gpu
def test_overlapped_on_cuda_equals_synchronous_calls():
    import copy

    visual = tiny_clip().model.visual
    runner = TrunkRunner(copy.deepcopy(visual), 2, torch.device("cuda"), pad_batches=True)
    batches = [(i, torch.randn(1, n, 3, 224, 224)) for i, n in enumerate((8, 8, 5))]
    got = dict(runner.overlapped(iter(batches)))
    for i, images in batches:
        want_embed, want_tokens = runner(images)
        np.testing.assert_array_equal(got[i][0], want_embed)
        np.testing.assert_array_equal(got[i][1], want_tokens)


@pytest.mark.gpu
def test_compiled_trunk_does_not_recompile_for_the_padded_last_batch(monkeypatch):
    """The padded short batch has the full batches' shape and channels_last strides."""
    import torch._dynamo

    torch._dynamo.reset()
    runner = TrunkRunner(tiny_clip().model.visual, 2, torch.device("cuda"), compile=True)
    runner.trunk_tokens(torch.randn(1, 8, 3, 224, 224))  # compiles for (8, 3, 224, 224)
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    tokens = runner.trunk_tokens(torch.randn(1, 5, 3, 224, 224))  # padded to 8: no recompile
    assert tokens.shape == (5, 50, 64)


@pytest.mark.gpu
def test_host_copies_run_on_their_own_stream_after_the_compute():
    """The device-to-host copies go on `copy_stream`, not the compute stream, and still give
    the synchronous results (the copy stream waits for the batch's compute)."""
    visual = tiny_clip().model.visual
    runner = TrunkRunner(visual, 2, torch.device("cuda"))
    assert runner.copy_stream != torch.cuda.current_stream()
    images = torch.randn(1, 8, 3, 224, 224)
    pending = runner.submit(images)
    assert pending._event is not None
    embed, tokens = pending.result()
    want_embed, want_tokens = runner.compute(images)
    np.testing.assert_array_equal(embed, want_embed.half().cpu().numpy())
    np.testing.assert_array_equal(tokens, want_tokens.half().cpu().numpy())
