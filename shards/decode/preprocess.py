"""The exact open_clip ViT-B-32 eval transform and the seeded training views.

Every decode backend (DALI mixed, DALI CPU, Pillow) takes its geometry from this file, so
the backends differ only in how pixels are resampled, never in which pixels they pick:

    eval view (view 0):   shorter side -> 224 (bicubic), centre crop 224x224,
                          OpenAI mean/std; exactly open_clip's `image_transform(224,
                          is_train=False)` as built by `create_model_and_transforms('ViT-B-32')`.
    training views (1..): random-resized-crop (open_clip's train scale/ratio) + horizontal
                          flip, from counter-based random numbers keyed on
                          (seed, sample index, view) and computed for a whole batch at
                          once, so they do not depend on batch size, worker count, rank
                          or backend.

Usage:
    w, h = eval_resize_size(500, 333)            # (336, 224), torchvision's rounding
    params = view_params(500, 333, seed=0, index=7, view=1)
    x = pil_views(image, [eval_params(500, 333), params])   # (2, 3, 224, 224)
    geo = batch_geometry(widths, heights, indices, seed=0, views=2)   # geo.boxes (2, N, 4)
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
        "rng": "SplitMix64 stream keyed on (seed, index, view); 10 vectorised tries",
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


def counter_uniforms(seed: int, indices: np.ndarray, view: int, draws: int) -> np.ndarray:
    """Uniform [0, 1) numbers keyed on (seed, sample index, view, draw number).

    A SplitMix64 stream per (seed, index, view): its key is the hash of the three counters and
    its d-th number the finaliser of key + (d + 1) * golden ratio. Nothing depends on which
    other samples are in the batch, so views are the same whatever the batching.

    Returns:
        (N, draws) float64.
    """
    key = _splitmix(np.full(indices.shape, seed, dtype=np.uint64))
    key = _splitmix(key ^ indices.astype(np.uint64))
    key = _splitmix(key ^ np.uint64(view))  # (N,)
    steps = np.arange(1, draws + 1, dtype=np.uint64) * _GOLDEN  # (draws,)
    bits = _splitmix(key[:, None] + steps[None, :], add=False)  # (N, draws)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _splitmix(x: np.ndarray, add: bool = True) -> np.ndarray:
    """SplitMix64's finaliser (Steele et al. 2014) on uint64 arrays; wraps modulo 2**64."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN if add else x.copy()
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


# Draws per training view: TRIES (scale, log-ratio) pairs, then top, left and flip.
TRIES = 10
DRAWS = 2 * TRIES + 3


def random_resized_crops(width: np.ndarray, height: np.ndarray, u: np.ndarray) -> np.ndarray:
    """torchvision's `RandomResizedCrop.get_params` for N images at once, all tries vectorised.

    The first of the TRIES candidate crops that fits is taken, as torchvision's loop takes it;
    images where none fits get torchvision's fallback (whole image clamped to the ratio
    range, centred).

    Args:
        width, height: (N,) image sizes.
        u: (N, DRAWS) uniforms from `counter_uniforms`.

    Returns:
        (N, 4) int64 boxes (left, top, crop_width, crop_height) in the original image.
    """
    w_img, h_img = width.astype(np.float64), height.astype(np.float64)  # (N,)
    scale = RRC_SCALE[0] + (RRC_SCALE[1] - RRC_SCALE[0]) * u[:, 0 : 2 * TRIES : 2]  # (N, T)
    lo, hi = math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])
    aspect = np.exp(lo + (hi - lo) * u[:, 1 : 2 * TRIES : 2])  # (N, T)
    target = (w_img * h_img)[:, None] * scale  # (N, T)
    cw, ch = np.rint(np.sqrt(target * aspect)), np.rint(np.sqrt(target / aspect))  # (N, T)
    fits = (cw > 0) & (cw <= w_img[:, None]) & (ch > 0) & (ch <= h_img[:, None])  # (N, T)
    first = fits.argmax(axis=1)  # (N,) first fitting try
    rows = np.arange(len(u))
    cw, ch = cw[rows, first], ch[rows, first]  # (N,)
    top = np.floor(u[:, 2 * TRIES] * (h_img - ch + 1))
    left = np.floor(u[:, 2 * TRIES + 1] * (w_img - cw + 1))
    fallback = ~fits.any(axis=1)
    if fallback.any():
        fw, fh = _fallback_crop(w_img[fallback], h_img[fallback])
        cw[fallback], ch[fallback] = fw, fh
        left[fallback] = (w_img[fallback] - fw) // 2
        top[fallback] = (h_img[fallback] - fh) // 2
    return np.stack([left, top, cw, ch], axis=1).astype(np.int64)  # (N, 4)


def _fallback_crop(w_img: np.ndarray, h_img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's fallback size: the whole image, clamped to the ratio range."""
    ratio = w_img / h_img
    narrow, wide = ratio < RRC_RATIO[0], ratio > RRC_RATIO[1]
    fw = np.where(wide, np.rint(h_img * RRC_RATIO[1]), w_img)
    fh = np.where(narrow, np.rint(w_img / RRC_RATIO[0]), h_img)
    return fw, fh


@dataclass(frozen=True)
class BatchGeometry:
    """Geometry of V views of N samples (the batched form of `ViewParams`).

    Attributes:
        resize: (N, 2) eval view's (width, height) after torchvision's resize.
        boxes: (V, N, 4) (left, top, width, height): view 0 in the resized image, views 1..
            in the original image.
        flips: (V, N) bool, mirror after cropping (always False for view 0).
    """

    resize: np.ndarray
    boxes: np.ndarray
    flips: np.ndarray

    def params(self, i: int) -> list[ViewParams]:
        """The views of the i-th sample as `ViewParams`, view 0 first."""
        out = []
        for v in range(len(self.boxes)):
            left, top, w, h = (int(x) for x in self.boxes[v, i])
            resize = (int(self.resize[i, 0]), int(self.resize[i, 1])) if v == 0 else None
            out.append(ViewParams(resize, left, top, w, h, bool(self.flips[v, i])))
        return out


def batch_geometry(widths, heights, indices, *, seed: int, views: int) -> BatchGeometry:
    """Every view's geometry for a batch: view 0 the eval crop, views 1.. random crops + flips.

    Args:
        widths, heights: (N,) sizes of the decoded images.
        indices: (N,) global store-order indices (the generator's counters).
        seed: seed of the training views.
        views: V.
    """
    width, height = np.asarray(widths, np.int64), np.asarray(heights, np.int64)
    index = np.asarray(indices, np.int64)
    resize = np.stack(eval_resize_sizes(width, height), axis=1)  # (N, 2)
    boxes = np.empty((views, len(width), 4), np.int64)  # (V, N, 4)
    flips = np.zeros((views, len(width)), bool)  # (V, N)
    boxes[0, :, 0] = np.rint((resize[:, 0] - IMAGE_SIZE) / 2.0)  # round half to even, as
    boxes[0, :, 1] = np.rint((resize[:, 1] - IMAGE_SIZE) / 2.0)  # torchvision's center_crop
    boxes[0, :, 2:] = IMAGE_SIZE
    for v in range(1, views):
        u = counter_uniforms(seed, index, v, DRAWS)  # (N, DRAWS)
        boxes[v] = random_resized_crops(width, height, u)
        flips[v] = u[:, DRAWS - 1] < FLIP_PROBABILITY
    return BatchGeometry(resize, boxes, flips)


def eval_resize_sizes(width: np.ndarray, height: np.ndarray, size: int = IMAGE_SIZE):
    """`eval_resize_size` for arrays: ((N,) widths, (N,) heights) after the resize."""
    portrait = width <= height
    # int(224 * long / short) as torchvision truncates it; max(.., 1) gives a 0-sized
    # (unreadable) image some geometry, whose decode then fails and names the sample.
    long_w = np.floor(size * width / np.maximum(height, 1))
    long_h = np.floor(size * height / np.maximum(width, 1))
    new_w = np.where(portrait, size, long_w).astype(np.int64)
    new_h = np.where(portrait, long_h, size).astype(np.int64)
    return new_w, new_h


def view_params(width: int, height: int, *, seed: int, index: int, view: int) -> ViewParams:
    """Geometry of view `view` of sample `index`; view 0 is the eval view."""
    return sample_params(width, height, seed=seed, index=index, views=view + 1)[view]


def sample_params(
    width: int, height: int, *, seed: int, index: int, views: int
) -> list[ViewParams]:
    """All `views` views of one sample, view 0 first (a batch of one of `batch_geometry`)."""
    return batch_geometry([width], [height], [index], seed=seed, views=views).params(0)


def pil_views(image, params: list[ViewParams]):
    """Apply view geometry to an RGB PIL image with torchvision's PIL ops (open_clip's path).

    Returns:
        float32 tensor (V, 3, 224, 224), normalised.
    """
    import torch  # deferred: torch off the --help path
    from torchvision.transforms import InterpolationMode  # deferred: torch off the --help path
    from torchvision.transforms import functional as F  # deferred: torch off the --help path

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
