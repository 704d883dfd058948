"""torchvision decode backend: `torchvision.io.decode_jpeg` (nvJPEG on a GPU, libjpeg-turbo on
the CPU) and torch ops for the views; no wheel beyond torchvision, which every torch host has.

Each batch's JPEGs are decoded in one call (on CUDA, nvJPEG's batched decode, bundled inside
torchvision's wheel), then every view takes its geometry from `batch_geometry`, as the other
backends do: the eval view resizes the whole image (bicubic, antialiased, as Pillow) and crops,
a training view crops the original and resizes the crop, then mirrors. Pixels are rounded to
8 bits after the resize, as Pillow's are, and normalised like the others. The CPU runs the
very same code with decode_jpeg on the CPU: what the tests compare with Pillow.

A batch decode_jpeg cannot read (a damaged JPEG) is decoded again with Pillow, tolerantly, and
its damaged keys are kept in `fallback_keys`, as the DALI backend does.

Usage:
    loader = TorchvisionLoader(catalog, batch_size=256, views=1, seed=0, workers=4,
                               device=torch.device("cuda"))
    for batch in loader: ...   # Batch(images (V, B, 3, 224, 224) on the device, index (B,))
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from shards.decode.batch import Batch
from shards.decode.catalog import Catalog
from shards.decode.pil import decode_views
from shards.decode.preprocess import IMAGE_SIZE, MEAN, STD, BatchGeometry, batch_geometry

log = logging.getLogger(__name__)


def resize_like_pillow(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(3, H, W) 0..255 float -> (3, height, width): bicubic with Pillow's antialias support,
    rounded to 8-bit levels as Pillow's uint8 result is."""
    out = F.interpolate(
        image[None], size=(height, width), mode="bicubic", antialias=True, align_corners=False
    )[0]
    return out.round_().clamp_(0, 255)


def views_of(image: torch.Tensor, geo: BatchGeometry, i: int) -> torch.Tensor:
    """Every view of the i-th decoded image (3, H, W) uint8 -> (V, 3, 224, 224) 0..255 float."""
    x = image.float()
    out = []
    for v in range(len(geo.boxes)):
        left, top, w, h = (int(c) for c in geo.boxes[v, i])
        if v == 0:
            rw, rh = (int(c) for c in geo.resize[i])
            view = resize_like_pillow(x, rw, rh)[:, top : top + h, left : left + w]
        else:
            view = resize_like_pillow(x[:, top : top + h, left : left + w], IMAGE_SIZE, IMAGE_SIZE)
        if geo.flips[v, i]:
            view = view.flip(-1)
        out.append(view)
    return torch.stack(out)  # (V, 3, 224, 224)


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """0..255 float (..., 3, H, W) -> OpenAI-normalised float32, as to_tensor + normalize."""
    mean = torch.tensor(MEAN, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(STD, device=pixels.device).view(3, 1, 1)
    return (pixels / 255.0 - mean) / std


class TorchvisionLoader:
    """Batches decoded by torchvision (nvJPEG on `device` when it is CUDA), in store order."""

    backend = "torchvision"

    def __init__(self, catalog: Catalog, *, batch_size, views, seed, workers, device=None):
        self.catalog, self.batch_size, self.views = catalog, batch_size, views
        self.seed, self.workers, self.device = seed, workers, device
        cuda = device is not None and torch.device(device).type == "cuda"
        self.decode_device = torch.device(device) if cuda else torch.device("cpu")
        self.output_shape = (views, batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)
        self.output_dtype = torch.float32
        self.fallback_keys: list[str] = []  # samples Pillow had to decode tolerantly

    def __len__(self) -> int:
        return len(self.catalog)

    def _read(self, positions: range) -> list[torch.Tensor]:
        """The batch's JPEG bytes as CPU uint8 tensors (decode_jpeg's input), read ahead."""
        return [torch.from_numpy(np.array(v)) for v in self.catalog.jpeg_views(positions)]

    def __iter__(self):
        n = len(self.catalog)
        batches = [range(s, min(s + self.batch_size, n)) for s in range(0, n, self.batch_size)]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tv-read") as pool:
            ahead = pool.submit(self._read, batches[0]) if batches else None
            for b, positions in enumerate(batches):
                data = ahead.result()
                if b + 1 < len(batches):
                    ahead = pool.submit(self._read, batches[b + 1])
                batch = self._decode(data, positions)
                yield batch.to(self.device) if self.device is not None else batch

    def _decode(self, data: list[torch.Tensor], positions: range) -> Batch:
        index = self.catalog.indices[positions.start : positions.stop]  # (B,)
        try:
            images = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.decode_device)
        except RuntimeError as err:
            return self._pillow_batch(positions, err)
        heights = [int(img.shape[1]) for img in images]
        widths = [int(img.shape[2]) for img in images]
        geo = batch_geometry(widths, heights, index, seed=self.seed, views=self.views)
        pixels = torch.stack([views_of(img, geo, i) for i, img in enumerate(images)], dim=1)
        return Batch(normalise(pixels), torch.from_numpy(index.copy()))  # (V, B, 3, 224, 224)

    def _pillow_batch(self, positions: range, err: RuntimeError) -> Batch:
        """A batch decode_jpeg failed on, decoded by Pillow; damaged keys are remembered."""
        images, damaged = [], []
        for i in positions:
            key = self.catalog.keys[i]
            x, repaired = decode_views(self.catalog.read(i), key,
                                       index=int(self.catalog.indices[i]), seed=self.seed,
                                       views=self.views)  # fmt: skip
            images.append(x)  # (V, 3, 224, 224)
            if repaired:
                damaged.append(key)
        self.fallback_keys.extend(damaged)
        log.warning("decode_jpeg failed on a batch of %d samples (%s); decoded it with Pillow. "
                    "Damaged JPEGs: %s", len(positions), str(err).splitlines()[0][:200],
                    damaged or "none found by Pillow")  # fmt: skip
        index = self.catalog.indices[positions.start : positions.stop].copy()
        stacked = torch.stack(images, dim=1).to(self.decode_device)  # (V, B, 3, 224, 224)
        return Batch(stacked, torch.from_numpy(index))
