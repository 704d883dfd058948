"""`FeatureConfig`: every knob of `engine features`, validated once.

cfg = FeatureConfig(depth=2, views=1, weights="random")
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from engine.errors import UserError
from shards.decode import BACKENDS

NUM_BLOCKS = 12  # ViT-B/32 has 12 residual blocks; depth k leaves the last k to the trainer.
DEVICES = ("auto", "cpu", "cuda")
COMPRESSORS = ("none", "zstd", "lz4")


@dataclass
class FeatureConfig:
    """Options of one feature pass (`engine features`).

    Build with `FeatureConfig(**d)` so unknown keys fail loudly.
    """

    # Trailing blocks left for the trainer; 2 unfreezes enough of ViT-B/32 to adapt to
    # fine-grained classes while the cache still skips 10/12 of the compute.
    depth: int = 2
    # Cached views per image: view 0 is the eval view, views 1.. are seeded random crops.
    # One view keeps the store at 77 KB/image; more views buy augmentation for the tail.
    views: int = 1
    # "openai" (open_clip's download and cache), a checkpoint path, or "random" (tests, demo).
    weights: str = "openai"
    # 256 fills an H100 in bf16 and still fits a laptop CPU's memory in fp32.
    batch_size: int = 256
    # Decode backend; "auto" picks DALI on a GPU, DALI CPU without one, Pillow without DALI.
    backend: str = "auto"
    # Decode threads (DALI) or DataLoader processes (Pillow); None = every core (max 16).
    workers: int | None = None
    # Seed of the random-resized-crop views (views >= 1); the eval view does not use it.
    seed: int = 0
    # Store rows per chunk along N; None derives it from the shards' shard_size (must divide
    # it so that ranks owning whole shards never share a chunk).
    chunk_n: int | None = None
    # Compressor of the token array; fp16 activations barely compress (see store.py), so none.
    compressor: str = "none"
    # torch.compile the trunk on CUDA: worth it for 100k+ images, not for a demo.
    compile: bool = False
    # "auto" = CUDA when available (the LOCAL_RANK GPU under torchrun), else CPU.
    device: str = "auto"
    # Start over even when a complete or partial store exists at the output path.
    force: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.depth <= NUM_BLOCKS:
            raise UserError(f"depth (--unfreeze-last) must be in 0..{NUM_BLOCKS}, got {self.depth}")
        if self.views < 1:
            raise UserError(f"views must be >= 1, got {self.views}")
        if self.batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {self.batch_size}")
        if self.backend not in BACKENDS:
            raise UserError(f"unknown backend {self.backend!r}; choose one of {list(BACKENDS)}")
        if self.device not in DEVICES:
            raise UserError(f"unknown device {self.device!r}; choose one of {list(DEVICES)}")
        if self.compressor not in COMPRESSORS:
            raise UserError(
                f"unknown compressor {self.compressor!r}; choose one of {list(COMPRESSORS)}"
            )
        if self.workers is not None and self.workers < 0:
            raise UserError(f"workers must be >= 0, got {self.workers}")
        if self.chunk_n is not None and self.chunk_n < 1:
            raise UserError(f"chunk_n must be >= 1, got {self.chunk_n}")

    def to_dict(self) -> dict:
        """Plain dict (JSON-ready) of every option."""
        return asdict(self)
