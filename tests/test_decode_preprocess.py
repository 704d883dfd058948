"""The geometry in shards.decode.preprocess is open_clip's ViT-B-32 transform, exactly."""

from __future__ import annotations

import io

import numpy as np
import open_clip
import pytest
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from test_decode_support import SIZES, make_jpeg
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms import functional as F

from shards.decode import preprocess as pp


@pytest.fixture(scope="module")
def eval_transform():
    # What create_model_and_transforms('ViT-B-32') builds for eval (default PreprocessCfg).
    return image_transform_v2(PreprocessCfg(), is_train=False)


@pytest.mark.parametrize("size", [*SIZES, (225, 300), (227, 227), (300, 225), (1, 7)])
def test_eval_size_and_crop_match_torchvision(size):
    w, h = size
    image = Image.new("RGB", (w, h))
    resized = F.resize(image, 224)
    assert pp.eval_resize_size(w, h) == resized.size
    p = pp.eval_params(w, h)
    top = int(round((resized.height - 224) / 2.0))
    left = int(round((resized.width - 224) / 2.0))
    assert (p.left, p.top, p.width, p.height) == (left, top, 224, 224)


def test_center_crop_uses_round_half_to_even():
    # new long side 225 -> offset round(0.5) = 0; 227 -> round(1.5) = 2 (not 1).
    assert pp.eval_resize_size(225, 224) == (225, 224)
    assert pp.eval_params(225, 224).left == 0
    assert pp.eval_params(227, 224).left == 2
    # the long side is truncated, not rounded: 224 * 500 / 333 = 336.3 -> 336, 224*299/223=300.3
    assert pp.eval_resize_size(500, 333) == (336, 224)
    assert pp.eval_resize_size(223, 299) == (224, 300)


def test_constants_are_open_clips():
    assert pp.MEAN == open_clip.OPENAI_DATASET_MEAN
    assert pp.STD == open_clip.OPENAI_DATASET_STD
    train = image_transform_v2(PreprocessCfg(), is_train=True)
    rrc = train.transforms[0]
    assert isinstance(rrc, RandomResizedCrop)
    assert tuple(rrc.scale) == pp.RRC_SCALE
    assert tuple(rrc.ratio) == pytest.approx(pp.RRC_RATIO)
    assert pp.PREPROCESS["mean"] == list(open_clip.OPENAI_DATASET_MEAN)


@pytest.mark.parametrize("size", SIZES)
def test_pil_eval_view_equals_open_clip(size, eval_transform):
    image = Image.open(io.BytesIO(make_jpeg(*size, seed=3))).convert("RGB")
    ours = pp.pil_views(image, [pp.eval_params(*image.size)])  # (1, 3, 224, 224)
    assert torch.equal(ours[0], eval_transform(image))


def test_training_view_equals_open_clip_train_transform(monkeypatch):
    """With open_clip's RandomResizedCrop forced to our crop, its output equals ours."""
    image = Image.open(io.BytesIO(make_jpeg(500, 333, seed=1))).convert("RGB")
    train = image_transform_v2(PreprocessCfg(), is_train=True)
    for index in range(6):
        p = pp.view_params(500, 333, seed=7, index=index, view=1)
        crop = (p.top, p.left, p.height, p.width)
        monkeypatch.setattr(RandomResizedCrop, "get_params", staticmethod(lambda *a, c=crop: c))
        expected = train(image)
        if p.flip:
            expected = expected.flip(-1)  # flip commutes with normalisation
        assert torch.equal(pp.pil_views(image, [p])[0], expected)


def test_views_are_deterministic_and_distinct():
    a = [pp.view_params(640, 480, seed=0, index=i, view=v) for i in range(50) for v in (1, 2)]
    b = [pp.view_params(640, 480, seed=0, index=i, view=v) for i in range(50) for v in (1, 2)]
    assert a == b
    assert pp.view_params(640, 480, seed=1, index=0, view=1) != a[0]
    assert a[0] != a[1]  # view 1 and view 2 of sample 0 differ
    assert pp.view_params(640, 480, seed=0, index=0, view=0) == pp.eval_params(640, 480)


def test_random_resized_crop_stays_in_scale_ratio_and_bounds():
    flips = []
    for i in range(400):
        w, h = SIZES[i % len(SIZES)]
        p = pp.view_params(w, h, seed=0, index=i, view=1)
        assert p.left >= 0 and p.left + p.width <= w
        assert p.top >= 0 and p.top + p.height <= h
        if (w, h) in {(640, 480), (333, 500), (500, 333)}:  # where the first draw always fits
            assert 0.88 <= p.width * p.height / (w * h) <= 1.0
            assert 0.74 <= p.width / p.height <= 1.35
        flips.append(p.flip)
    assert 0.4 < np.mean(flips) < 0.6


def test_fallback_crop_is_centred_for_extreme_aspect():
    # 1000x223 can never hold a 3:4..4:3 crop of 90% area: torchvision's centred fallback.
    geo = pp.batch_geometry([1000, 223], [223, 1000], [0, 1], seed=0, views=2)
    assert geo.boxes[1].tolist() == [
        [(1000 - 297) // 2, 0, 297, 223],
        [0, (1000 - 297) // 2, 223, 297],
    ]
