"""Parts of `bench.gpu_check` with big data: the memory plan at 300k, the features pass.

The memory part calls the token-placement planner through `plan_tokens_adapter`, the one
place that knows its signature. The features parts (`features`: torchvision's nvJPEG, no
wheel beyond the host's; `dali`: DALI `mixed`, the only part that needs DALI's wheels) time
the whole pass in steady state over >= 131k images (shards hard-linked from a few distinct
ones, so the disk holds 8 shards and the page cache serves the rest), with the rates of its
stages measured alone beside it, and check that the GPU's JPEG decoder did the decoding.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import resource
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from bench.gpu_check_parts import CheckSizes, _fit_rate, check_line, synthetic_features
from features.store import FeatureStore

log = logging.getLogger(__name__)

PLAN_VIEWS = (1, 2, 4, 8)  # V the memory plan must hold at 300k images
DISTINCT_JPEGS = 256  # generated once, hard-linked to reach the features part's count
# Host CPU per decoded image above which the CPU, not the GPU's JPEG decoder, did the work:
# libjpeg-turbo decodes a ~500x375 web JPEG and resizes it in ~3 ms of one core; nvJPEG leaves
# the host at most its Huffman pass (hybrid backend), the hardware engine not even that.
GPU_DECODE_CPU_MS = 1.0


def plan_tokens_adapter(num_samples: int, views: int, *, gpu_free_bytes: int,
                        host_free_bytes: int):  # fmt: skip
    """The planner's decision for (N, V) on these capacities, or None when it is absent."""
    try:
        from heads.memory import plan_tokens
    except ImportError:
        return None
    return plan_tokens(
        num_samples, views, gpu_free_bytes=gpu_free_bytes, host_free_bytes=host_free_bytes
    )


def gpu_free_bytes() -> int:
    """Free GPU memory, counting what torch has cached but not allocated as free."""
    if not torch.cuda.is_available():
        return 0
    free, _ = torch.cuda.mem_get_info()
    return int(free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated())


def host_free_bytes() -> int:
    """MemAvailable from /proc/meminfo (0 where it cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _describe(plan) -> str:
    if dataclasses.is_dataclass(plan):
        return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(plan).items())
    return str(plan)


def part_memory(sizes: CheckSizes) -> list[dict]:
    """The planner's decision at 300k for V = 1, 2, 4, 8, then one fine-tune epoch (k=2)
    over N zero-filled tokens (NumPy zeros: no host time spent filling them)."""
    full_n = CheckSizes().memory_n  # the plan is arithmetic: full size even in a dry run
    gpu, host = gpu_free_bytes(), host_free_bytes()
    lines = []
    for views in PLAN_VIEWS:
        plan = plan_tokens_adapter(full_n, views, gpu_free_bytes=gpu, host_free_bytes=host)
        note = "planner not available (heads.memory.plan_tokens)" if plan is None else None
        lines.append(check_line("memory", f"plan {full_n} x V={views}", None, "plan",
                                note=note or _describe(plan)))  # fmt: skip
    clip = sizes.clip()
    visual = clip.model.visual
    base = synthetic_features(sizes.memory_n, sizes.classes, 0, visual, sizes.device)
    # (V, N, 50, 768) zeros as a view of one row: no 23 GB filled or copied on the host
    # before the GPU sees them (np.zeros would be read page by page by the token loader).
    row = np.zeros((1, 1, 50, visual.transformer.width), np.float16)
    tokens = np.broadcast_to(row, (sizes.memory_views, sizes.memory_n, *row.shape[2:]))
    data = FeatureStore.from_arrays(embed=base.embed, labels=base.labels, classes=base.classes,
                                    tokens=tokens, depth=2)  # fmt: skip
    start = time.perf_counter()
    error = None
    try:
        rate = _fit_rate(data, sizes, clip.model, unfreeze_last=2, epochs_lp=0, epochs_ft=1,
                         batch_size=sizes.tail_batch)  # fmt: skip
    except (RuntimeError, MemoryError) as err:  # an out-of-memory is this part's finding
        rate, error = None, f"{type(err).__name__}: {str(err)[:200]}"
    seconds = time.perf_counter() - start
    name = f"fine-tune epoch, {sizes.memory_n} x V={sizes.memory_views} zero tokens"
    lines.append(check_line("memory", name + " completed", float(error is None), "bool", 1.0,
                            note=error or f"{seconds:.1f} s with setup"))  # fmt: skip
    lines.append(check_line("memory", name, rate, "samples/s"))
    return lines


def make_repeated_shards(root: Path, n: int, *, shard_size: int, distinct: int) -> Path:
    """Shards of `n` web-sized JPEGs (a multiple of `shard_size`): `distinct` shards written
    (bench.host_bench, directly, without the packer's checks), the others hard links to them."""
    from bench.host_bench import make_host_shards
    from shards.manifest import MANIFEST_NAME

    base = make_host_shards(root / "distinct", distinct * shard_size, shard_size)
    manifest = json.loads((base / MANIFEST_NAME).read_text())
    out = root / "shards"
    out.mkdir(parents=True)
    shards = []
    for s in range(n // shard_size):
        src = manifest["shards"][s % distinct]
        name = f"shard-{s:06d}"
        os.link(base / src["name"], out / f"{name}.tar")
        os.link(base / src["index"], out / f"{name}.idx")
        shards.append({"name": f"{name}.tar", "index": f"{name}.idx", "count": src["count"]})
    manifest.update(shards=shards, num_samples=sum(sh["count"] for sh in shards))
    (out / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    return out


class TimedLoader:
    """A loader that notes when each batch leaves it: the steady rate of whatever consumes it
    (extract's whole pass, with store-write back-pressure) is read from these times."""

    def __init__(self, loader):
        self.loader, self.times, self.counts = loader, [], []

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __iter__(self):
        for batch in self.loader:
            self.times.append(time.perf_counter())
            self.counts.append(len(batch.index))
            yield batch

    def steady_rate(self, warmup: int, end: float | None = None) -> float | None:
        """Images per second after the first `warmup` batches (start-up, compilation, the
        first chunks) up to the last batch, or up to `end` when given."""
        if len(self.times) <= warmup + 1:
            return None
        last = self.times[-1] if end is None else end
        images = sum(self.counts[warmup + 1 :]) if end is None else sum(self.counts[warmup:])
        return images / max(last - self.times[warmup], 1e-9)


def nvjpeg_loaded(by: str = "any", maps: Path = Path("/proc/self/maps")) -> bool:
    """Whether a libnvjpeg is mapped into this process: the GPU JPEG decoder really ran (DALI
    falls back to the CPU without a word when it cannot load its own). `by`: "torchvision"
    (the copy inside torchvision's wheel), "dali" (any other: DALI's nvidia-nvjpeg) or "any"."""
    try:
        paths = {ln.split()[-1] for ln in maps.read_text().splitlines() if "libnvjpeg" in ln}
    except OSError:
        return False
    if by == "torchvision":
        paths = {p for p in paths if "torchvision" in p}
    elif by == "dali":
        paths = {p for p in paths if "torchvision" not in p}
    return bool(paths)


class JpegUtilisation:
    """`nvidia-smi dmon -s u` in the background: the highest `jpg` (JPEG engine) use seen."""

    def __init__(self):
        self.peak: float | None = None
        self._proc = None
        if shutil.which("nvidia-smi"):
            cmd = ["nvidia-smi", "dmon", "-s", "u", "-d", "1"]
            try:
                self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                                              stderr=subprocess.DEVNULL)  # fmt: skip
            except OSError:  # evidence only: the check goes on without it
                return
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        column = None
        for line in self._proc.stdout:
            fields = line.lstrip("#").split()
            if line.startswith("#") and "jpg" in fields:
                column = fields.index("jpg")
            elif column is not None and len(fields) > column and re.match(r"^\d+$", fields[column]):
                self.peak = max(self.peak or 0.0, float(fields[column]))

    def stop(self) -> float | None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        return self.peak


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread: DALI's decoders too
    return usage.ru_utime + usage.ru_stime


def _decode_rate(shard_dir: Path, backend: str, sizes: CheckSizes, workers: int):
    """Decode alone (no trunk, no store) over the first `decode_n` images: (steady img/s,
    host CPU ms per image)."""
    from shards.decode import make_loader

    count = max(1, sizes.decode_n // sizes.shard_size)
    loader = TimedLoader(make_loader(shard_dir, backend=backend, batch_size=sizes.features_batch,
                                     device=torch.device(sizes.device), workers=workers,
                                     shard_ids=range(count)))  # fmt: skip
    cpu = _cpu_seconds()
    for _ in loader:
        pass
    _sync_device(sizes)
    cpu_ms = 1000 * (_cpu_seconds() - cpu) / max(1, sum(loader.counts))
    return loader.steady_rate(sizes.warmup_batches, end=time.perf_counter()), cpu_ms


def _sync_device(sizes: CheckSizes) -> None:
    if sizes.device == "cuda":
        torch.cuda.synchronize()


def _features_rate(shard_dir: Path, backend: str, sizes: CheckSizes, workers: int) -> dict:
    """The whole `engine features` pass (depth 2), its steady rate and its wall time."""
    from features.config import FeatureConfig
    from features.extract import extract
    from shards.decode import make_loader

    timed = []

    def loader_factory(*args, **kwargs):
        timed.append(TimedLoader(make_loader(*args, **kwargs)))
        return timed[-1]

    cfg = FeatureConfig(depth=2, weights="random", batch_size=sizes.features_batch,
                        workers=workers, force=True, device=sizes.device, backend=backend,
                        compile=sizes.compile_trunk)  # fmt: skip
    clip = sizes.clip()
    with tempfile.TemporaryDirectory(prefix="gpu-check-store-") as tmp:
        start = time.perf_counter()
        extract(shard_dir, Path(tmp) / "f.zarr", cfg, clip_loader=lambda w, d: clip,
                loader_factory=loader_factory)  # fmt: skip
        wall = time.perf_counter() - start
    loader = timed[0]
    return {"steady": loader.steady_rate(sizes.warmup_batches), "wall": wall,
            "images": sum(loader.counts)}  # fmt: skip


def _baseline_rate(shard_dir: Path, sizes: CheckSizes, workers: int) -> float:
    """webdataset + Pillow DataLoader + open_clip over `baseline_n` images: the plain way."""
    from bench.decode_bench import baseline_iter
    from bench.features_bench import _half_autocast

    clip, device = sizes.clip(), torch.device(sizes.device)
    batches = baseline_iter(shard_dir, sizes.features_batch, workers)
    start, n = time.perf_counter(), 0
    for images in batches():
        with torch.inference_mode(), _half_autocast(device):
            feats = clip.model.encode_image(images.to(device, non_blocking=True))
        torch.nn.functional.normalize(feats.float(), dim=-1).cpu()
        n += len(images)
    return n / (time.perf_counter() - start)


def _stage_rates(root: Path, sizes: CheckSizes, workers: int) -> dict:
    """Trunk alone at the features batch and the store writer alone, both img/s."""
    from bench.gpu_check_parts import TRUNK_DEPTH, _trunk_rate
    from bench.store_bench import store_write_rows
    from features.runner import TrunkRunner

    runner = TrunkRunner(sizes.clip().model.visual, TRUNK_DEPTH, torch.device(sizes.device),
                         compile=sizes.compile_trunk)  # fmt: skip
    trunk = _trunk_rate(runner, sizes.features_batch, sizes)
    store = store_write_rows(images=sizes.store_n, out_dir=root / "store-write")[0]
    return {"trunk": trunk, "store": store["images_per_s"]}


def features_lines(part: str, backend: str, sizes: CheckSizes, root: Path) -> list[dict]:
    """Every line of a features part: the pass in steady state next to its stages alone."""
    from features.threads import thread_budget

    budget = thread_budget()
    start = time.perf_counter()
    shard_dir = make_repeated_shards(root, sizes.features_n, shard_size=sizes.shard_size,
                                     distinct=sizes.distinct_shards)  # fmt: skip
    made = time.perf_counter() - start
    monitor = JpegUtilisation() if sizes.device == "cuda" else None
    decode, cpu_ms = _decode_rate(shard_dir, backend, sizes, budget.decode)
    run = _features_rate(shard_dir, backend, sizes, budget.decode)
    jpg_peak = monitor.stop() if monitor else None
    loaded = nvjpeg_loaded("dali" if part == "dali" else "torchvision")
    stages = _stage_rates(root, sizes, budget.decode)
    base_dir = root / "baseline"
    base_dir.mkdir()
    for tar in sorted(shard_dir.glob("shard-*.tar"))[
        : max(1, sizes.baseline_n // sizes.shard_size)
    ]:
        os.link(tar, base_dir / tar.name)
    baseline = _baseline_rate(base_dir, sizes, budget.decode)
    steady = run["steady"]
    note = (f"{run['images']} images, steady after {sizes.warmup_batches} batches; wall "
            f"{run['wall']:.1f} s with start-up and flush; shards made in {made:.0f} s; "
            f"threads: {budget}")  # fmt: skip
    gpu = sizes.device == "cuda"
    return [
        check_line(part, f"features pass ({backend}, depth 2), steady", steady, "img/s", 15_000,
                   note=note),
        check_line(part, f"decode only ({backend})", decode, "img/s",
                   note=f"first {sizes.decode_n} images"),
        check_line(part, f"trunk only, batch {sizes.features_batch}", stages["trunk"], "img/s"),
        check_line(part, "store write only (views=1)", stages["store"], "img/s"),
        check_line(part, "baseline: webdataset + Pillow + open_clip", baseline, "img/s",
                   note=f"{sizes.baseline_n} images"),
        check_line(part, "features pass / baseline", (steady or 0) / baseline, "x", 4.0),
        check_line(part, "host CPU per decoded image (the GPU decoded)", cpu_ms, "ms",
                   GPU_DECODE_CPU_MS if gpu else None, op="<=",
                   note=f"libnvjpeg mapped: {loaded}; JPEG engine use peak: "
                   + (f"{jpg_peak}%" if jpg_peak is not None else "not read (nvidia-smi dmon)")),
    ]  # fmt: skip


def part_features(sizes: CheckSizes) -> list[dict]:
    """The features pass decoded by torchvision (nvJPEG on a GPU): no wheel beyond the host's."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        return features_lines("features", "torchvision", sizes, Path(tmp))


def part_dali(sizes: CheckSizes) -> list[dict]:
    """The features pass through DALI (`mixed` on a GPU): the engine's primary backend."""
    import shards.decode as decode

    if not decode.has_dali():  # the import's own error says which wheel is missing
        why = getattr(decode, "DALI_IMPORT_ERROR", "")
        name = "features pass (dali-gpu, depth 2), steady"
        return [check_line("dali", name, None, "img/s", 15_000, note=f"skipped: {why}")]
    backend = "dali-gpu" if sizes.device == "cuda" else "dali-cpu"
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        return features_lines("dali", backend, sizes, Path(tmp))
