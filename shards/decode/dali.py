"""DALI decode backends: `mixed` (GPU, hardware JPEG engines) and CPU operators.

The host takes each sample's JPEG bytes as a slice of the tar's mmap and its size from the
shard metadata, computes the whole batch's view geometry at once (shards.decode.preprocess),
then feeds bytes and geometry through `fn.external_source`; DALI decodes, resizes with the explicit torchvision sizes,
crops with `fn.slice`, mirrors and normalises. Geometry computed on the host is what makes
views identical across backends, batch sizes and worker counts.

DALI fails a whole batch on one broken JPEG. Such a batch is decoded again with Pillow
(tolerantly), a warning names the damaged keys, and the run goes on: no sample is lost.

Usage:
    loader = DaliLoader(catalog, device="cpu", batch_size=64, views=1, seed=0, workers=4)
"""

from __future__ import annotations

import collections
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from shards.decode.batch import Batch
from shards.decode.catalog import Catalog
from shards.decode.pil import decode_views
from shards.decode.preprocess import IMAGE_SIZE, MEAN, STD, BatchGeometry, batch_geometry

log = logging.getLogger(__name__)
# Batches DALI runs ahead of the one handed out: overlaps host reading, decode and copy.
PREFETCH = 2
# Failed batches in a row with no damaged JPEG in them before the run stops: DALI failing
# on good data is a bug or a broken setup, and falling back for ever would hide it.
MAX_UNEXPLAINED_FAILURES = 3


def geometry_columns(geo: BatchGeometry) -> list[np.ndarray]:
    """DALI's per-sample arguments as whole-batch arrays (the outer dimension is the batch):
    eval (w, h), then (start [top, left], shape [height, width], flip) per view."""
    resize, boxes = geo.resize.astype(np.float32), geo.boxes.astype(np.float32)
    columns = [np.ascontiguousarray(resize[:, 0]), np.ascontiguousarray(resize[:, 1])]  # (B,)
    for v in range(len(boxes)):
        columns.append(np.ascontiguousarray(boxes[v][:, [1, 0]]))  # (B, 2) top, left
        columns.append(np.ascontiguousarray(boxes[v][:, [3, 2]]))  # (B, 2) height, width
        columns.append(geo.flips[v].astype(np.int32))  # (B,)
    return columns


def _error_summary(err: Exception) -> str:
    """The line of a DALI error that says what went wrong (it follows 'encountered:')."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for before, line in zip(lines, lines[1:], strict=False):
        if before == "encountered:":
            return line[:300]
    return lines[0][:300] if lines else type(err).__name__


def prepare_batch(catalog: Catalog, positions: range, *, seed: int, views: int) -> list:
    """External-source columns of one batch: JPEG bytes (zero-copy slices of the tars' mmaps),
    then `geometry_columns`. Sizes come from the shard metadata (read once per shard) and
    the views of the whole batch are computed at once; no per-sample syscall or generator."""
    widths, heights = catalog.image_sizes(positions)  # (B,), (B,)
    index = catalog.indices[positions.start : positions.stop]  # (B,)
    geo = batch_geometry(widths, heights, index, seed=seed, views=views)
    return [catalog.jpeg_views(positions), *geometry_columns(geo)]


class HostFeeder:
    """DALI's external source: bytes + geometry of the next batch, computed one batch ahead."""

    def __init__(self, catalog: Catalog, *, batch_size: int, views: int, seed: int):
        self.catalog, self.views, self.seed = catalog, views, seed
        n = len(catalog)
        self.batches = [range(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
        self.pending: collections.deque[range] = collections.deque()
        # Batches DALI may still be reading: the ones queued ahead plus the one running.
        self._alive: collections.deque[list] = collections.deque(maxlen=PREFETCH + 2)
        self._next = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dali-host")
        self._ahead = self._pool.submit(self._prepare, 0) if self.batches else None

    def _prepare(self, b: int):
        return prepare_batch(self.catalog, self.batches[b], seed=self.seed, views=self.views)

    def __call__(self):
        if self._next >= len(self.batches):
            raise StopIteration
        out = self._ahead.result()
        self._alive.append(out)  # external_source(no_copy=True) reads these buffers in place
        self.pending.append(self.batches[self._next])
        self._next += 1
        if self._next < len(self.batches):
            self._ahead = self._pool.submit(self._prepare, self._next)
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def build_pipeline(feeder: HostFeeder, *, device: str, batch_size: int, workers: int, views: int):
    """The DALI graph: decode once, then the eval view and the training views from it."""
    from nvidia.dali import fn, pipeline_def, types  # deferred: optional DALI

    device_id = torch.cuda.current_device() if device == "gpu" else None
    cubic = {"interp_type": types.INTERP_CUBIC, "antialias": True}
    pixels = {"axis_names": "HW", "normalized_anchor": False, "normalized_shape": False}

    @pipeline_def(
        batch_size=batch_size,
        num_threads=workers,
        device_id=device_id,
        prefetch_queue_depth=PREFETCH,
        exec_dynamic=True,
    )
    def pipeline():
        # no_copy: JPEGs are read straight from the tars' mmaps (the feeder keeps them alive).
        cols = fn.external_source(
            source=feeder, num_outputs=3 + 3 * views, batch=True, no_copy=True
        )
        jpegs, eval_w, eval_h = cols[0], cols[1], cols[2]
        image = fn.decoders.image(
            jpegs,
            device="mixed" if device == "gpu" else "cpu",
            output_type=types.RGB,
            adjust_orientation=False,  # Pillow (and so open_clip) ignores EXIF orientation
            jpeg_fancy_upsampling=True,  # libjpeg-turbo's chroma upsampling, as Pillow
        )
        outputs = []
        for v in range(views):
            start, shape, flip = cols[3 + 3 * v], cols[4 + 3 * v], cols[5 + 3 * v]
            if v == 0:  # resize whole image as torchvision, then centre crop
                x = fn.resize(image, resize_x=eval_w, resize_y=eval_h, **cubic)
                x = fn.slice(x, start, shape, **pixels)
            else:  # crop the original, then resize the crop to 224x224
                x = fn.slice(image, start, shape, **pixels)
                x = fn.resize(x, resize_x=IMAGE_SIZE, resize_y=IMAGE_SIZE, **cubic)
            outputs.append(
                fn.crop_mirror_normalize(
                    x,
                    dtype=types.FLOAT,
                    output_layout="CHW",
                    mean=[255.0 * m for m in MEAN],
                    std=[255.0 * s for s in STD],
                    mirror=flip,
                )
            )
        return tuple(outputs)

    pipe = pipeline()
    pipe.build()
    return pipe


class DaliLoader:
    """Batches decoded by DALI on the GPU (`device="gpu"`) or CPU, in store order."""

    def __init__(
        self, catalog: Catalog, *, device, batch_size, views, seed, workers, out_device=None
    ):
        self.catalog, self.device, self.batch_size = catalog, device, batch_size
        self.views, self.seed, self.workers, self.out_device = views, seed, workers, out_device
        self.backend = "dali-gpu" if device == "gpu" else "dali-cpu"
        self.output_shape = (views, batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)
        self.output_dtype = torch.float32
        self.fallback_keys: list[str] = []  # samples Pillow had to decode tolerantly
        self._unexplained = 0

    def __len__(self) -> int:
        return len(self.catalog)

    def __iter__(self):
        if len(self.catalog) == 0:
            return
        feeder = HostFeeder(
            self.catalog, batch_size=self.batch_size, views=self.views, seed=self.seed
        )
        try:
            pipe = build_pipeline(
                feeder,
                device=self.device,
                batch_size=self.batch_size,
                workers=self.workers,
                views=self.views,
            )
            # One explicit stream for DALI's outputs and the copies out of them; each batch's
            # consumer stream waits on it (`_to_batch`), so no device-wide sync is needed.
            stream = torch.cuda.Stream() if self.device == "gpu" else None
            while True:
                try:
                    outputs = pipe.run(stream) if stream is not None else pipe.run()
                except StopIteration:
                    break
                except RuntimeError as err:
                    # DALI reports a failed iteration in order, and keeps running after it.
                    yield self._finish(self._pillow_batch(feeder.pending.popleft(), err))
                    continue
                self._unexplained = 0
                yield self._finish(self._to_batch(outputs, feeder.pending.popleft(), stream))
        finally:
            feeder.close()

    def _to_batch(self, outputs, positions: range, stream=None) -> Batch:
        """Copy DALI's outputs into one (V, B, 3, 224, 224) tensor.

        On the GPU the copies run on `stream`, the one `pipe.run` returned the outputs on;
        the stream first waits for the consumer's stream (the buffer may be memory it freed
        with work still queued), and the consumer's stream then waits for the copies.
        """
        if self.device != "gpu":
            # CPU decode bound for a GPU: pinned, so `_finish`'s non_blocking copy is async.
            to_cuda = self.out_device is not None and torch.device(self.out_device).type == "cuda"
            images = torch.empty(self._shape(len(positions)), pin_memory=to_cuda)
            for v, out in enumerate(outputs):
                images[v].copy_(torch.from_numpy(np.asarray(out.as_tensor())))
            return Batch(images, self._index(positions))
        from nvidia.dali.plugin.pytorch import feed_ndarray  # deferred: optional DALI

        consumer = torch.cuda.current_stream()
        images = torch.empty(self._shape(len(positions)), device=consumer.device)
        stream.wait_stream(consumer)
        for v, out in enumerate(outputs):
            feed_ndarray(out.as_tensor(), images[v], cuda_stream=stream)
        consumer.wait_stream(stream)
        return Batch(images, self._index(positions))

    def _shape(self, n: int) -> tuple[int, ...]:
        return (self.views, n, 3, IMAGE_SIZE, IMAGE_SIZE)  # (V, B, 3, 224, 224) float32

    def _index(self, positions: range) -> torch.Tensor:
        return torch.from_numpy(self.catalog.indices[positions.start : positions.stop].copy())

    def _pillow_batch(self, positions: range, err: RuntimeError) -> Batch:
        """Decode a batch DALI failed on with Pillow, naming the damaged samples."""
        images, damaged = [], []
        for i in positions:
            key = self.catalog.keys[i]
            x, repaired = decode_views(
                self.catalog.read(i),
                key,
                index=int(self.catalog.indices[i]),
                seed=self.seed,
                views=self.views,
            )
            images.append(x)  # (V, 3, 224, 224)
            if repaired:
                damaged.append(key)
        self.fallback_keys.extend(damaged)
        self._unexplained = 0 if damaged else self._unexplained + 1
        if self._unexplained >= MAX_UNEXPLAINED_FAILURES:
            raise RuntimeError(
                f"DALI failed on {self._unexplained} batches in a row whose JPEGs Pillow decodes "
                f"without error; this is not a data problem: {_error_summary(err)}"
            ) from err
        log.warning(
            "DALI failed on a batch of %d samples (%s); decoded it with Pillow instead. "
            "Damaged JPEGs: %s",
            len(positions),
            _error_summary(err),
            damaged or "none found by Pillow",
        )
        stacked = torch.stack(images, dim=1)  # (V, B, 3, 224, 224)
        if self.device == "gpu":
            stacked = stacked.to(torch.device("cuda", torch.cuda.current_device()))
        return Batch(stacked, self._index(positions))

    def _finish(self, batch: Batch) -> Batch:
        return batch.to(self.out_device) if self.out_device is not None else batch
