"""Every stage benchmark behind one call, its rows normalised to one table.

    rows = run_suite(["decode", "train"], BenchSettings(images=256, device="cpu"), tmp_dir)

Each stage name maps to a function that calls its stage module's `run(...)` with sizes derived
from `BenchSettings` and turns that module's rows into the common columns (`COLUMNS`): the
engine's backend and images/s next to the plain baseline measured in the same run, their
ratio, and the stage's peak memory. A stage whose module is missing or fails becomes one row
carrying the error (logged with its traceback), so one broken stage never hides the others.
"""

from __future__ import annotations

import importlib
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import PeakMemory
from bench.decode_bench import make_bench_shards
from engine.registry import Registry
from features.model import load_clip

log = logging.getLogger(__name__)

COLUMNS = (
    "stage",
    "backend",
    "images_per_s",
    "baseline",
    "baseline_images_per_s",
    "ratio",
    "peak_memory_mb",
    "note",
)
# Column titles of the printed table, in `COLUMNS` order.
TITLES = (
    "stage",
    "backend",
    "images/s",
    "baseline",
    "baseline images/s",
    "ratio",
    "peak MB",
    "note",
)
DEVICES = ("cpu", "cuda")

StageFn = Callable[["BenchContext"], list[dict]]
# Registration order is the bench's order; a second stage under one name is refused.
STAGES: Registry[StageFn] = Registry("bench stage", error=ValueError)


def stage(name: str):
    """Register a stage function under `name` (the order of registration is the bench's order)."""

    return STAGES.register(name)


@dataclass
class BenchSettings:
    """What to measure and how big; every size is derived from `images`, `quick` and `device`.

    Attributes:
        images: images of the decode-bound stages; None = 192 on CPU (48 quick), 8192 on a
            GPU (1024 quick): enough batches to reach steady state without spending minutes.
        quick: one timed repeat instead of three (the demo's short bench).
        device: "cpu" or "cuda" (resolve "auto" before).
        shards: the user's shard folder to decode instead of generated images.
        vit_images, vit_batch: override `model_images` / `batch_size` (tests use tiny ones).
    """

    images: int | None = None
    quick: bool = False
    device: str = "cpu"
    shards: Path | None = None
    vit_images: int | None = None
    vit_batch: int | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        for name in ("images", "vit_images", "vit_batch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")

    @property
    def gpu(self) -> bool:
        return self.device == "cuda"

    @property
    def n_images(self) -> int:
        if self.images is not None:
            return self.images
        if self.gpu:
            return 1024 if self.quick else 8192
        return 48 if self.quick else 192

    @property
    def model_images(self) -> int:
        """Images through the ViT: a CPU runs ViT-B/32 at ~2-20 img/s, so a 24th (at least 4)."""
        if self.vit_images is not None:
            return self.vit_images
        return self.n_images if self.gpu else max(4, self.n_images // 24)

    @property
    def batch_size(self) -> int:
        if self.vit_batch is not None:
            return self.vit_batch
        return 256 if self.gpu else min(8, self.model_images)

    @property
    def repeats(self) -> int:
        return 1 if self.quick else 3


@dataclass
class BenchContext:
    """Settings plus what several stages share, built once on first use."""

    settings: BenchSettings
    workdir: Path
    _cache: dict = field(default_factory=dict)

    def shards(self) -> Path:
        """The user's shards, or `n_images` generated web-sized JPEGs packed once."""
        if self.settings.shards is not None:
            return Path(self.settings.shards)
        if "shards" not in self._cache:
            out = self.workdir / "generated"
            self._cache["shards"] = make_bench_shards(out, self.settings.n_images)
        return self._cache["shards"]

    def model_shards(self) -> Path:
        """Shards for the stages that run the whole ViT: all of `shards()` on a GPU; on a CPU,
        which runs ViT-B/32 at a few images/s, `model_images` generated images of their own."""
        if self.settings.gpu or self.settings.model_images >= self.settings.n_images:
            return self.shards()
        if "model_shards" not in self._cache:
            out = self.workdir / "generated_small"
            self._cache["model_shards"] = make_bench_shards(out, self.settings.model_images)
        return self._cache["model_shards"]

    def clip(self):
        """One random-weight ViT-B/32 (speed does not depend on the weights' values)."""
        if "clip" not in self._cache:
            self._cache["clip"] = load_clip("random", self.settings.device)
        return self._cache["clip"]


def make_row(
    stage_name: str,
    backend: str,
    rate: float | None,
    baseline: str | None = None,
    baseline_rate: float | None = None,
    note: str | None = None,
) -> dict:
    """One row in the common columns; `ratio` is engine over baseline when both exist."""
    ratio = None
    if rate and baseline_rate:
        ratio = round(rate / baseline_rate, 2)
    return {
        "stage": stage_name,
        "backend": backend,
        "images_per_s": None if rate is None else round(float(rate), 3),
        "baseline": baseline,
        "baseline_images_per_s": None if baseline_rate is None else round(float(baseline_rate), 3),
        "ratio": ratio,
        "peak_memory_mb": None,
        "note": note,
    }


def error_row(stage_name: str, err: BaseException) -> dict:
    return make_row(stage_name, "-", None, note=f"error: {type(err).__name__}: {err}")


def stage_module(name: str):
    """A stage benchmark module, imported only when its stage runs."""
    return importlib.import_module(f"bench.{name}")


def run_stage(name: str, ctx: BenchContext) -> list[dict]:
    """Rows of one stage with its peak memory; an error becomes a row instead of a crash."""
    stage_fn = STAGES.get(name)  # ValueError naming the valid stages
    log.info("bench stage %s ...", name)
    start = time.perf_counter()
    # A failing stage module must not end the whole bench; the traceback goes to the log.
    try:
        with PeakMemory() as mem:
            rows = stage_fn(ctx)
    except Exception as err:  # noqa: BLE001
        log.exception("bench stage %s failed", name)
        return [error_row(name, err)]
    for row in rows:
        row["peak_memory_mb"] = round(mem.peak_mb, 1)
    log.info("bench stage %s took %.1f s", name, time.perf_counter() - start)
    return rows


def run_suite(names: list[str], settings: BenchSettings, workdir: Path | None = None) -> list[dict]:
    """Rows of every stage in `names`, in the order given."""
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; valid: {', '.join(STAGES)}")
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
        ctx = BenchContext(settings, Path(workdir) if workdir else Path(tmp))
        rows = []
        for name in names:
            rows += run_stage(name, ctx)
    return rows


# The stage functions register themselves on import.
from bench import stages as _stages  # noqa: E402, F401
