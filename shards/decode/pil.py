"""Pillow decode backend: a map-style dataset over a catalog in a torch DataLoader.

Also the per-sample decoder the DALI backend falls back to when DALI fails a batch.

Usage:
    loader = PilLoader(catalog, batch_size=64, views=1, seed=0, workers=4)
    for batch in loader: ...   # Batch(images (V, B, 3, 224, 224), index (B,))
"""

from __future__ import annotations

import io
import logging

import torch
from PIL import Image

from engine.errors import UserError
from shards.decode.batch import Batch
from shards.decode.catalog import Catalog
from shards.decode.preprocess import IMAGE_SIZE, pil_views, sample_params
from shards.truncated import load_truncated_images

log = logging.getLogger(__name__)


def decode_rgb(jpeg: bytes, key: str) -> tuple[Image.Image, bool]:
    """Decode JPEG bytes to an RGB image, tolerating truncated or corrupt data.

    Returns:
        (image, repaired): repaired is True when only the tolerant decode succeeded.

    Raises:
        UserError: not even Pillow's tolerant decoder can read the sample.
    """
    try:
        with Image.open(io.BytesIO(jpeg)) as img:
            return img.convert("RGB"), False
    except (OSError, SyntaxError, ValueError):
        pass
    try:
        with load_truncated_images(), Image.open(io.BytesIO(jpeg)) as img:
            return img.convert("RGB"), True
    except (OSError, SyntaxError, ValueError) as err:
        raise UserError(
            f"sample {key!r} cannot be decoded even by Pillow ({err}); "
            "re-pack the images with `engine shard`, which rejects unreadable files"
        ) from err


def decode_views(jpeg: bytes, key: str, *, index: int, seed: int, views: int):
    """Decode one sample into its views.

    Returns:
        (images (V, 3, 224, 224) float32, repaired).
    """
    image, repaired = decode_rgb(jpeg, key)
    params = sample_params(image.width, image.height, seed=seed, index=index, views=views)
    return pil_views(image, params), repaired


class CatalogDataset(torch.utils.data.Dataset):
    """The i-th item: (views (V, 3, 224, 224), global index)."""

    def __init__(self, catalog: Catalog, *, views: int, seed: int):
        self.catalog, self.views, self.seed = catalog, views, seed

    def __len__(self) -> int:
        return len(self.catalog)

    def __getitem__(self, i: int):
        key, index = self.catalog.keys[i], int(self.catalog.indices[i])
        images, repaired = decode_views(
            self.catalog.read(i), key, index=index, seed=self.seed, views=self.views
        )
        if repaired:
            log.warning("sample %r (index %d) is a damaged JPEG; decoded tolerantly", key, index)
        return images, index


def collate(items) -> Batch:
    images = torch.stack([img for img, _ in items], dim=1)  # (V, B, 3, 224, 224)
    index = torch.tensor([i for _, i in items], dtype=torch.int64)  # (B,)
    return Batch(images=images, index=index)


class PilLoader:
    """Batches decoded by Pillow in `workers` DataLoader processes, in store order."""

    backend = "pil"

    def __init__(self, catalog: Catalog, *, batch_size, views, seed, workers, device=None):
        self.catalog, self.batch_size, self.views = catalog, batch_size, views
        self.seed, self.workers, self.device = seed, workers, device
        self.output_shape = (views, batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)
        self.output_dtype = torch.float32

    def __len__(self) -> int:
        return len(self.catalog)

    def __iter__(self):
        dataset = CatalogDataset(self.catalog, views=self.views, seed=self.seed)
        pin = self.device is not None and torch.device(self.device).type == "cuda"
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.workers,
            collate_fn=collate,
            pin_memory=pin,
            prefetch_factor=4 if self.workers else None,
        )
        for batch in loader:
            yield batch.to(self.device) if self.device is not None else batch
