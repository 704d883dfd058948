"""Frozen trunk + trainable tail reproduce open_clip's encode_image at every depth."""

from __future__ import annotations

import copy

import pytest
import torch
from clip_helpers import shared_random_clip

from engine.errors import UserError
from features.split import Advance, merge_tail, split_visual

pytestmark = pytest.mark.usefixtures("one_blas_thread")


@pytest.fixture(scope="module")
def clip():
    return shared_random_clip()


@pytest.fixture(scope="module")
def images():
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference(clip, images):
    with torch.no_grad():
        return clip.model.encode_image(images)  # (1, 512)


@pytest.mark.parametrize("depth", range(13))
def test_tail_of_trunk_equals_encode_image(clip, images, reference, depth):
    trunk, tail = split_visual(clip.model.visual, depth)
    with torch.no_grad():
        tokens = trunk(images)
        out = tail(tokens)
    assert tokens.shape == (1, 50, 768)
    assert out.shape == (1, 512)
    assert tail.depth == depth and len(trunk.blocks) == 12 - depth
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


def test_tokens_are_what_enters_the_first_tail_block(clip, images):
    trunk, _ = split_visual(clip.model.visual, 3)
    with torch.no_grad():
        out = clip.model.visual.forward_intermediates(
            images, indices=[8], output_fmt="NLC", output_extra_tokens=True
        )
        expected = torch.cat(
            [out["image_intermediates_prefix"][0], out["image_intermediates"][0]], dim=1
        )  # block 8's output = input of block 9 = first block of a depth-3 tail
        torch.testing.assert_close(trunk(images), expected, rtol=0, atol=0)


def test_advance_tokens_turns_a_deep_store_into_a_shallow_one(clip, images, reference):
    trunk4, _ = split_visual(clip.model.visual, 4)
    trunk1, tail1 = split_visual(clip.model.visual, 1)
    with torch.no_grad():
        tokens4 = trunk4(images)
        advance = Advance(clip.model.visual, from_depth=4, to_depth=1)
        tokens1 = advance(tokens4)
        torch.testing.assert_close(tokens1, trunk1(images), rtol=0, atol=0)
        torch.testing.assert_close(tail1(tokens1), reference, rtol=1e-5, atol=1e-5)
        assert len(advance) == 3 and len(Advance(clip.model.visual, 2, 2)) == 0
        torch.testing.assert_close(Advance(clip.model.visual, 2, 2)(tokens4), tokens4)
    with pytest.raises(UserError, match="cannot serve a tail of depth 4"):
        Advance(clip.model.visual, from_depth=1, to_depth=4)


def test_visual_state_dict_uses_the_models_key_names_and_merges_back(clip):
    _, tail = split_visual(clip.model.visual, 2)
    keys = set(tail.visual_state_dict())
    assert "transformer.resblocks.10.attn.in_proj_weight" in keys
    assert "transformer.resblocks.11.mlp.c_proj.bias" in keys
    assert {"ln_post.weight", "ln_post.bias", "proj"} <= keys
    assert not any(".resblocks.9." in k for k in keys)
    assert keys <= set(clip.model.visual.state_dict())

    trained = copy.deepcopy(tail)  # trained apart from the model
    with torch.no_grad():
        trained.proj.add_(1.0)
        trained.blocks[1].mlp.c_fc.bias.add_(0.5)
    model = copy.deepcopy(clip.model)
    original = clip.model.visual.state_dict()
    merged = merge_tail(original, trained)
    model.visual.load_state_dict(merged)  # strict: every key of the tower, every shape
    torch.testing.assert_close(model.visual.proj, trained.proj, rtol=0, atol=0)
    torch.testing.assert_close(
        model.visual.transformer.resblocks[11].mlp.c_fc.bias, trained.blocks[1].mlp.c_fc.bias
    )
    changed = {k for k in merged if not torch.equal(merged[k], original[k])}
    assert changed == {"proj", "transformer.resblocks.11.mlp.c_fc.bias"}
    torch.testing.assert_close(  # the untouched model is unchanged
        clip.model.visual.proj, tail.proj, rtol=0, atol=0
    )
    assert not torch.equal(clip.model.visual.proj, model.visual.proj)


def test_bad_depth_is_refused(clip):
    with pytest.raises(UserError, match="0..12"):
        split_visual(clip.model.visual, 13)


def test_trunk_runs_open_clips_forward_intermediates(clip, images, monkeypatch):
    """The trunk is open_clip's public hook stopped early, not a copy of its block loop."""
    calls = []
    real = type(clip.model.visual).forward_intermediates

    def spy(self, x, **kw):
        calls.append(kw)
        return real(self, x, **kw)

    monkeypatch.setattr(type(clip.model.visual), "forward_intermediates", spy)
    trunk, _ = split_visual(clip.model.visual, 2)
    with torch.no_grad():
        trunk(images)
    assert calls == [
        {
            "indices": [9],
            "stop_early": True,
            "intermediates_only": True,
            "output_fmt": "NLC",
            "output_extra_tokens": True,
        }
    ]
