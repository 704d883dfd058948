"""Decode pipelines: engine shards in, batches of normalised 224x224 views + indices out.

Backends, one interface (`make_loader`):
    dali-gpu  DALI `mixed` decoder (nvJPEG, hardware JPEG engines), output on the GPU
    dali-cpu  DALI CPU operators (libjpeg-turbo), for machines without a GPU
    pil       Pillow in a torch DataLoader, for machines without DALI (e.g. macOS)
    torchvision  torchvision.io.decode_jpeg: nvJPEG on the GPU when `device` is CUDA (no
              wheel beyond torchvision), libjpeg-turbo on the CPU otherwise
    auto      dali-gpu if CUDA and DALI, else dali-cpu if DALI, else pil

Usage:
    loader = make_loader("work/shards/train", batch_size=256, views=2)
    for batch in loader:
        batch.images  # (V, B, 3, 224, 224) float32
        batch.index   # (B,) int64 store-order indices
"""

from __future__ import annotations

from engine.errors import UserError
from shards.cpus import available_cpus
from shards.decode.preprocess import PREPROCESS

# The one list of decode backends; features.config and the CLI import it from here.
BACKENDS = ("auto", "dali-gpu", "dali-cpu", "pil", "torchvision")


def has_dali() -> bool:
    """Whether NVIDIA DALI imports on this machine; tried once, on first need (the import
    takes about a second, which `--help` should not pay). Tests set `HAS_DALI` to override."""
    if "HAS_DALI" not in globals():
        try:
            import nvidia.dali  # noqa: F401

            globals()["HAS_DALI"] = True
        except ImportError as err:  # kept, so that a check can say why DALI is missing
            globals()["HAS_DALI"] = False
            globals()["DALI_IMPORT_ERROR"] = f"{type(err).__name__}: {err}"
    return globals()["HAS_DALI"]


def __getattr__(name: str):
    # `HAS_DALI` and `Batch` (which needs torch) load on first use, so that
    # `from shards.decode import BACKENDS` (the CLI's --help) stays light.
    if name == "HAS_DALI":
        return has_dali()
    if name == "Batch":
        from shards.decode.batch import Batch

        return Batch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKENDS",
    "Batch",
    "HAS_DALI",
    "PREPROCESS",
    "has_dali",
    "make_loader",
    "resolve_backend",
]


def resolve_backend(backend: str = "auto") -> str:
    """The concrete backend `backend` means on this machine.

    Raises:
        UserError: unknown backend, or one this machine cannot run.
    """
    import torch

    if backend not in BACKENDS:
        raise UserError(f"unknown decode backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    cuda = torch.cuda.is_available()
    if backend == "auto":
        return ("dali-gpu" if cuda else "dali-cpu") if has_dali() else "pil"
    if backend.startswith("dali") and not has_dali():
        raise UserError(
            f"decode backend {backend!r} needs NVIDIA DALI, which is not installed; use pil"
        )
    if backend == "dali-gpu" and not cuda:
        raise UserError(
            "decode backend 'dali-gpu' needs a CUDA GPU and none is visible; use dali-cpu"
        )
    return backend


def default_workers() -> int:
    """Decode threads/processes: every core this process may use, at most 16."""
    return min(16, available_cpus())


def make_loader(
    shard_dir,
    *,
    backend: str = "auto",
    batch_size: int = 64,
    views: int = 1,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    device=None,
    workers: int | None = None,
    shard_ids=None,
):
    """An iterable of `Batch` over the samples rank `rank` of `world_size` owns.

    Args:
        shard_dir: folder written by `engine shard` (tars, DALI indexes, manifest.json), or
            its opened `shards.format.ShardSet`.
        backend: one of `BACKENDS`.
        batch_size: samples per batch; the last batch is smaller, never padded.
        views: V; view 0 is the eval view, views 1.. seeded random-resized-crop + flip.
        seed: seed of the training views.
        rank, world_size: rank r owns shards s with s % world_size == r.
        device: where the images end up (dali-gpu: already on the current CUDA device).
        workers: decode threads (DALI) or DataLoader processes (pil); None = all cores.
        shard_ids: only these shards (of the ones this rank owns); None = all.

    Returns:
        A loader with `len()` (samples this rank yields), `.backend`, `.output_shape`
        (V, batch_size, 3, 224, 224) and `.output_dtype` (float32).
    """
    from shards.decode.catalog import load_catalog

    if batch_size < 1 or views < 1:
        raise UserError(f"batch_size ({batch_size}) and views ({views}) must be at least 1")
    resolved = resolve_backend(backend)
    catalog = load_catalog(shard_dir, rank=rank, world_size=world_size, shard_ids=shard_ids)
    workers = default_workers() if workers is None else workers
    common = {"batch_size": batch_size, "views": views, "seed": seed, "workers": workers}
    if resolved == "pil":
        from shards.decode.pil import PilLoader

        return PilLoader(catalog, device=device, **common)
    if resolved == "torchvision":
        from shards.decode.tv import TorchvisionLoader

        return TorchvisionLoader(catalog, device=device, **common)
    from shards.decode.dali import DaliLoader

    dali_device = "gpu" if resolved == "dali-gpu" else "cpu"
    return DaliLoader(catalog, device=dali_device, out_device=device, **common)
