"""The exact open_clip ViT-B-32 eval transform and the seeded training views.

Every decode backend (DALI mixed, DALI CPU, Pillow) takes its geometry from this file, so
the backends differ only in how pixels are resampled, never in which pixels they pick:

    eval view (view 0):   shorter side -> 224 (bicubic), centre crop 224x224,
                          OpenAI mean/std; exactly open_clip's `image_transform(224,
                          is_train=False)` as built by `create_model_and_transforms('ViT-B-32')`.
    training views (1..): random-resized-crop (open_clip's train scale/ratio) + horizontal
                          flip, drawn from a per-sample generator seeded by
                          (seed, sample index, view), so they do not depend on batch size,
                          worker count or backend.

Usage:
    w, h = eval_resize_size(500, 333)            # (336, 224), torchvision's rounding
    params = view_params(500, 333, seed=0, index=7, view=1)
    x = pil_views(image, [eval_params(500, 333), params])   # (2, 3, 224, 224)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 224
# OpenAI CLIP's normalisation constants, as open_clip.constants.OPENAI_DATASET_MEAN/STD.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
# open_clip's own train transform for ViT-B-32 (AugmentationCfg default scale): mild crops,
# because fine-grained classes (a leaf's margin, a bird's bill) are lost by tight crops.
RRC_SCALE = (0.9, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
FLIP_PROBABILITY = 0.5

# Stored in the feature store attrs so a store says exactly how its pixels were made.
PREPROCESS = {
    "name": "open_clip ViT-B-32 eval",
    "size": IMAGE_SIZE,
    "resize": "shorter side to 224, long side int(224 * long / short) (torchvision)",
    "interpolation": "bicubic",
    "crop": "center, offsets int(round((side - 224) / 2))",
    "mode": "RGB",
    "mean": list(MEAN),
    "std": list(STD),
    "views": {
        "0": "eval",
        "1..": "random_resized_crop + hflip",
        "scale": list(RRC_SCALE),
        "ratio": list(RRC_RATIO),
        "flip_p": FLIP_PROBABILITY,
        "rng": "numpy Philox(SeedSequence([seed, index, view]))",
    },
}


@dataclass(frozen=True)
class ViewParams:
    """One view's geometry in the decoded image's pixel grid.

    Attributes:
        resize: (width, height) the image is resized to before cropping; None for a
            training view, which resizes only its crop (to 224x224).
        left, top, width, height: crop window, in the resized image for the eval view,
            in the original image for a training view.
        flip: mirror horizontally after cropping.
    """

    resize: tuple[int, int] | None
    left: int
    top: int
    width: int
    height: int
    flip: bool = False


def eval_resize_size(width: int, height: int, size: int = IMAGE_SIZE) -> tuple[int, int]:
    """(width, height) after torchvision's `Resize(size)`: the long side is truncated.

    DALI's `resize_shorter` rounds the long side instead, so DALI gets these sizes explicitly.
    """
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def eval_params(width: int, height: int, size: int = IMAGE_SIZE) -> ViewParams:
    """Geometry of the eval view: resize as torchvision, then `CenterCrop(size)`."""
    new_w, new_h = eval_resize_size(width, height, size)
    # torchvision's center_crop: int(round(...)), Python's round-half-to-even included.
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return ViewParams(resize=(new_w, new_h), left=left, top=top, width=size, height=size)


def view_rng(seed: int, index: int, view: int) -> np.random.Generator:
    """The generator of one (sample, view): independent of batching and backend."""
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, index, view])))


def random_resized_crop(width: int, height: int, rng: np.random.Generator) -> tuple[int, ...]:
    """torchvision's `RandomResizedCrop.get_params`, drawn from `rng`.

    Returns:
        (left, top, crop_width, crop_height) in the original image.
    """
    area = width * height
    log_ratio = (math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*RRC_SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, w, h
    # Fallback of torchvision: the whole image clamped to the ratio range, centred.
    in_ratio = width / height
    if in_ratio < RRC_RATIO[0]:
        w, h = width, int(round(width / RRC_RATIO[0]))
    elif in_ratio > RRC_RATIO[1]:
        h, w = height, int(round(height * RRC_RATIO[1]))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def view_params(width: int, height: int, *, seed: int, index: int, view: int) -> ViewParams:
    """Geometry of view `view` of sample `index`; view 0 is the eval view."""
    if view == 0:
        return eval_params(width, height)
    rng = view_rng(seed, index, view)
    left, top, w, h = random_resized_crop(width, height, rng)
    flip = bool(rng.uniform() < FLIP_PROBABILITY)
    return ViewParams(resize=None, left=left, top=top, width=w, height=h, flip=flip)


def sample_params(
    width: int, height: int, *, seed: int, index: int, views: int
) -> list[ViewParams]:
    """All `views` views of one sample, view 0 first."""
    return [view_params(width, height, seed=seed, index=index, view=v) for v in range(views)]


def pil_views(image, params: list[ViewParams]):
    """Apply view geometry to an RGB PIL image with torchvision's PIL ops (open_clip's path).

    Returns:
        float32 tensor (V, 3, 224, 224), normalised.
    """
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    out = []
    for p in params:
        if p.resize is not None:
            # torchvision computes the same size from the int; passing it keeps one definition.
            img = F.resize(image, [p.resize[1], p.resize[0]], InterpolationMode.BICUBIC)
            img = F.crop(img, p.top, p.left, p.height, p.width)
        else:
            size = [IMAGE_SIZE, IMAGE_SIZE]
            img = F.resized_crop(
                image, p.top, p.left, p.height, p.width, size, InterpolationMode.BICUBIC
            )
        if p.flip:
            img = F.hflip(img)
        out.append(F.normalize(F.to_tensor(img), MEAN, STD))  # (3, 224, 224)
    return torch.stack(out)  # (V, 3, 224, 224)
