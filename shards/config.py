"""Configuration of `engine shard`.

cfg = ShardConfig(short_side=512, workers=4)
manifest = shards.writer.pack(Path("data/train"), Path("work/shards/train"), cfg)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from engine.errors import UserError
from shards.cpus import available_cpus

# The feature store chunks along N must divide shard_size (docs/architecture.md), and
# the decoders batch by 64/128/256: a power of two keeps every such chunk whole.
DEFAULT_SHARD_SIZE = 1024

# Measured by `python -m bench.shard_bench` (see bench/shard_bench.py): typical web images
# (short side <= 512) pass through byte for byte, while multi-megapixel photos shrink ~20x in
# pixels, which makes every later decode ~10x cheaper. 512 is still >= 2x the 224 px model
# input, so random-resized-crop training views down to ~20% of the area never upsample.
DEFAULT_SHORT_SIDE = 512


@dataclass
class ShardConfig:
    """Options of one `engine shard` run.

    Attributes:
        shard_size: accepted samples per shard (every shard but the last is full).
        short_side: downscale images whose short side exceeds this; None keeps sizes.
        workers: worker processes preparing images; None = all CPU cores.
        quality: JPEG quality of re-encoded images (95: visually lossless, ~2x the
            bytes of 85, still far below the cost of a later decode).
        labeled: True = class folders, False = flat folder, None = detect from SRC.
        force: rebuild even when finished or partial shards exist.
    """

    shard_size: int = DEFAULT_SHARD_SIZE
    short_side: int | None = DEFAULT_SHORT_SIDE
    workers: int | None = None
    quality: int = 95
    labeled: bool | None = None
    force: bool = False

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise UserError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.short_side is not None and self.short_side < 32:
            raise UserError(
                f"short_side must be >= 32 pixels (or None to keep sizes), got {self.short_side}"
            )
        if self.workers is not None and self.workers < 1:
            raise UserError(f"workers must be >= 1, got {self.workers}")
        if not 1 <= self.quality <= 100:
            raise UserError(f"quality must be in 1..100, got {self.quality}")

    @property
    def num_workers(self) -> int:
        """Worker processes to use: the configured count, else every core this process may use."""
        return self.workers if self.workers is not None else available_cpus()

    def params(self) -> dict:
        """Parameters that change the output bytes (recorded in the manifest)."""
        d = asdict(self)
        return {k: d[k] for k in ("shard_size", "short_side", "quality")}
