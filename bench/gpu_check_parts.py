"""Parts of `bench.gpu_check` that need no DALI: CUDA, trunk, training, screening, pytest.

Each part takes the `CheckSizes` in force and returns lines made by `check_line`: a measured
value next to its target. The sizes are the issue's on a GPU; `CheckSizes.dry()` shrinks
every one so that the whole check runs on a CPU in seconds (CI), targets reported, not
enforced.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch._dynamo.utils import counters

import features.runner
from bench.common import time_call
from bench.screen_speed import _inputs
from bench.tiny_clip import tiny_clip
from features.gpu_env import gpu_visibility_problem
from features.model import load_clip
from features.store import FeatureStore
from heads.config import TrainConfig
from heads.screen import ScreenConfig, run_screening
from heads.screen.partition import AMBIGUOUS, CLEAN
from heads.screen.relabel import FolderMixtureConfig, relabel
from heads.screen.rounds import ScreenResult
from heads.trainer import fit

log = logging.getLogger(__name__)

TRUNK_DEPTH = 2  # the recommended --unfreeze-last 2: the trunk is 10 of 12 blocks
TESTS = Path(__file__).resolve().parents[1] / "tests"  # the repository's, from any folder


@dataclass(frozen=True)
class CheckSizes:
    """How big each part runs; the defaults are the acceptance sizes on one H100/H200."""

    dry: bool = False
    device: str = "cuda"
    trunk_batches: tuple[int, ...] = (256, 1024)  # the two batch sizes
    compile_trunk: bool = True
    repeats: int = 5  # timed repeats after warm-up; medians
    head_n: int = 1_000_000  # head-only: enough samples for ~0.5 s epochs at 2M/s
    head_batch: int = 16_384  # a launch-bound size would measure kernel launches
    tail_n: int = 32_768  # tail k=2: 2.5 GB of fp16 tokens, ~0.5 s epochs at 60k/s
    tail_batch: int = 512  # `engine train`'s default batch
    classes: int = 1000
    screen_classes: int = 1500  # a screening round at 300k x 1500 (200 per class)
    screen_per_class: int = 200
    memory_n: int = 300_000  # the memory plan's full size (zero-filled tokens)
    memory_views: int = 1
    features_n: int = 131_072  # the features pass in steady state: >= 131k images
    features_batch: int = 256
    shard_size: int = 1024
    distinct_shards: int = 8  # written; the other shards are hard links to these
    decode_n: int = 32_768  # decode alone
    baseline_n: int = 16_384  # webdataset + Pillow + open_clip (a few thousand img/s)
    store_n: int = 8192  # store writes alone
    warmup_batches: int = 16  # start-up, compilation and the first chunks: not steady
    pytest_files: tuple[str, ...] | None = None  # None: every tests/ file with a gpu test

    @classmethod
    def dry_run(cls) -> CheckSizes:
        """Tiny sizes on the CPU: every code path of the check in seconds."""
        return cls(
            dry=True, device="cpu", trunk_batches=(2, 4), compile_trunk=False, repeats=1,
            head_n=512, head_batch=128, tail_n=16, tail_batch=8, classes=10,
            screen_classes=10, screen_per_class=20, memory_n=32, features_n=64,
            features_batch=8, shard_size=16, distinct_shards=2, decode_n=32, baseline_n=16,
            store_n=256, warmup_batches=2, pytest_files=(str(TESTS / "test_runner.py"),),
        )  # fmt: skip

    def clip(self):
        """The model parts time, built once per process: ViT-B/32 (random weights: speed
        needs no values); the dry run uses the tiny test CLIP. Parts only read it (the
        trainers and the full baseline train copies)."""
        key = (self.dry, self.device)
        if key not in _CLIPS:
            if self.dry:
                _CLIPS[key] = tiny_clip()
            else:
                _CLIPS[key] = load_clip("random", self.device)
        return _CLIPS[key]


_CLIPS: dict = {}


def check_line(
    part: str,
    name: str,
    value: float | None,
    unit: str,
    target: float | None = None,
    op: str = ">=",
    note: str | None = None,
) -> dict:
    """One row of the report; `passed` is None where there is no target or no value."""
    passed = None
    if target is not None and value is not None:
        passed = bool(value >= target if op == ">=" else value <= target)
    return {"part": part, "name": name, "value": value, "unit": unit, "target": target,
            "op": op if target is not None else None, "passed": passed, "note": note}  # fmt: skip


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def part_cuda(sizes: CheckSizes) -> list[dict]:
    """CUDA is visible (a full check stops here when it is not) and what the device is."""

    seen = torch.cuda.is_available()
    problem = gpu_visibility_problem()
    name = torch.cuda.get_device_name(0) if seen else "no CUDA device"
    note = f"torch {torch.__version__}, CUDA build {torch.version.cuda}"
    if problem:
        note += f"; {problem}"
    target = None if sizes.dry else 1.0  # a dry run is meant for machines without one
    lines = [check_line("cuda", f"device: {name}", float(seen), "bool", target, note=note)]
    if seen:
        free, total = torch.cuda.mem_get_info()
        lines.append(check_line("cuda", "GPU memory free", free / 2**30, "GiB",
                                note=f"of {total / 2**30:.1f} GiB"))  # fmt: skip
    return lines


def _trunk_rate(runner, batch: int, sizes: CheckSizes) -> float:

    x = torch.randn(1, batch, 3, 224, 224, device=torch.device(sizes.device))  # (V=1, B, ...)
    seconds = time_call(lambda: runner.trunk_tokens(x), repeats=sizes.repeats, warmup=2)
    return batch / seconds


def compiled_graphs() -> int:
    """Graphs torch.compile has built in this process so far (dynamo's own counter)."""

    return int(counters["stats"]["unique_graphs"])


def part_trunk(sizes: CheckSizes) -> list[dict]:
    """The frozen trunk (10 of 12 blocks) alone, eager and compiled, per batch size: one
    runner per mode for every batch size, the compiled one with static shapes (one graph per
    batch size, never a dynamic-shape graph); the graphs built are counted."""

    clip = sizes.clip()
    device = torch.device(sizes.device)
    precision = "bf16" if sizes.device == "cuda" else "fp32"
    lines = []
    for compile in (False, True) if sizes.compile_trunk else (False,):
        runner = features.runner.TrunkRunner(
            clip.model.visual, TRUNK_DEPTH, device, compile=compile
        )
        graphs = compiled_graphs()
        for batch in sizes.trunk_batches:
            mode = "compiled" if compile else "eager"
            rate = _trunk_rate(runner, batch, sizes)
            lines.append(check_line("trunk", f"trunk 10/12 {precision} {mode}, batch {batch}",
                                    rate, "img/s", 40_000))  # fmt: skip
        if compile:
            built = compiled_graphs() - graphs
            lines.append(check_line("trunk", "compiled graphs (one per batch size)", built,
                                    "graphs", len(sizes.trunk_batches), op="<="))  # fmt: skip
    return lines


def synthetic_features(n: int, classes: int, depth: int, visual, device: str, seed: int = 0):
    """`FeatureStore` shaped for `visual`: random unit embeddings and (depth >= 1) random fp16
    tokens, drawn on `device` (a CPU draws 1e9 normals in tens of seconds, a GPU in ms)."""

    gen = torch.Generator(device).manual_seed(seed)
    embed = torch.randn(n, visual.output_dim, generator=gen, device=device)  # (n, 512)
    embed = torch.nn.functional.normalize(embed, dim=1)
    tokens = None
    if depth:
        width = visual.transformer.width
        tokens = torch.randn(1, n, 50, width, generator=gen, device=device, dtype=torch.float16)
        tokens = tokens.cpu().numpy()  # (1, n, 50, W)
    labels = torch.randint(0, classes, (n,), generator=gen, device=device).cpu().numpy()
    return FeatureStore.from_arrays(embed=embed.half().cpu().numpy(), labels=labels, depth=depth,
                       classes=[f"{k:04d}" for k in range(classes)], tokens=tokens)  # fmt: skip


def _fit_rate(data, sizes: CheckSizes, clip=None, **cfg) -> float:
    """Median samples/s of `heads.trainer.fit`'s epochs, the first excluded (warm-up)."""

    model = fit(data, TrainConfig(device=sizes.device, **cfg), clip=clip)
    rates = [h["samples_per_s"] for h in model.history]
    return float(np.median(rates[1:] if len(rates) > 1 else rates))


def part_train(sizes: CheckSizes) -> list[dict]:
    """Tail k=2 on cached tokens, and head-only on embeddings (CLI default batch and large)."""
    clip = sizes.clip()
    visual = clip.model.visual
    tail_data = synthetic_features(sizes.tail_n, sizes.classes, 2, visual, sizes.device)
    tail = _fit_rate(tail_data, sizes, clip.model, unfreeze_last=2, epochs_lp=0,
                     epochs_ft=sizes.repeats + 1, batch_size=sizes.tail_batch)  # fmt: skip
    del tail_data
    lines = [check_line("train", f"tail k=2, batch {sizes.tail_batch}", tail, "samples/s",
                        60_000, note=f"{sizes.tail_n} samples")]  # fmt: skip
    head_data = synthetic_features(sizes.head_n, sizes.classes, 0, visual, sizes.device)

    # 512: the old CLI batch, launch-bound by design (heads/head_batch.py), so shown without
    # the 2M target; None: the CLI's default now, picked by heads.head_batch's probe.
    for batch in dict.fromkeys((512, sizes.head_batch, TrainConfig().batch_size)):
        rate = _fit_rate(head_data, sizes, epochs_lp=sizes.repeats + 1, batch_size=batch)
        target = None if batch == 512 else 2_000_000
        note = f"{sizes.head_n} samples" + ("; launch-bound, no target" if target is None else "")
        lines.append(check_line("train", f"head-only, batch {batch or 'auto'}", rate, "samples/s",
                                target, note=note))  # fmt: skip
    return lines


def part_screen(sizes: CheckSizes) -> list[dict]:
    """One screening round (round 0) on synthetic features at 300k x 1500, timed once after
    a warm-up round at a tenth of the classes (CUDA context, kernels, faiss); without the
    folder-mixture stage, which `part_mixture` times on its own."""

    cfg = ScreenConfig(rounds=0, device=sizes.device, mixture=None)
    if not sizes.dry:  # a CPU has nothing to warm up; a second round would double the time
        run_screening(_inputs(max(2, sizes.screen_classes // 10), 20, 512, 0, 1.0), cfg)
    inputs = _inputs(sizes.screen_classes, sizes.screen_per_class, 512, 0, 1.0)
    _sync()
    start = time.perf_counter()
    run_screening(inputs, cfg)
    _sync()
    seconds = time.perf_counter() - start
    name = f"screening round, {len(inputs.labels)} x {sizes.screen_classes}"
    return [check_line("screen", name, seconds, "s", 30.0, op="<=")]


def part_mixture(sizes: CheckSizes) -> list[dict]:
    """The folder-mixture stage (issue 18: seconds on a GPU) at 300k x 1500 on synthetic
    features, 70% of them screening's clean seeds, the rest ambiguous; the start (k-means
    sub-means) on the host, the 16 EM passes on the device. Its own part, so the base call's
    time stays what it was (it runs in the DALI call, which has the time to spare)."""
    inputs = _inputs(sizes.screen_classes, sizes.screen_per_class, 512, 0, 1.0)
    n = len(inputs.labels)
    clean = np.random.default_rng(0).random(n) < 0.7
    state = np.where(clean, CLEAN, AMBIGUOUS).astype(np.int8)
    result = ScreenResult(state, None, None, inputs.labels, None, None, {}, None)
    _sync()
    start = time.perf_counter()
    out = relabel(result, inputs, FolderMixtureConfig(device=sizes.device))
    _sync()
    seconds = time.perf_counter() - start
    moved = int((out.mixture_class != inputs.labels).sum())
    name = f"folder-mixture stage, {n} x {sizes.screen_classes}"
    note = f"up to 4 sub-means per class, 16 EM passes; {moved} named another class"
    return [check_line("mixture", name, seconds, "s", 30.0, op="<=", note=note)]


_SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected)")


def gpu_test_files(root: Path = TESTS) -> tuple[str, ...]:
    """Test files holding a `gpu`-marked test: collecting only these keeps modules that import
    what the GPU host lacks (cleanlab, ...) from failing the collection."""
    found = (p for p in sorted(Path(root).glob("test_*.py")) if "mark.gpu" in p.read_text())
    return tuple(str(p) for p in found)


def part_pytest(sizes: CheckSizes) -> list[dict]:
    """`pytest -m gpu` in a child process: none may fail, at least one must pass (pytest's
    exit 5, nothing collected, and a run where every test skipped both fail)."""
    files = sizes.pytest_files if sizes.pytest_files is not None else gpu_test_files()
    args = ("-m", "gpu", *files)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    counts = {kind.rstrip("s"): int(n) for n, kind in _SUMMARY.findall(out.stdout)}
    tail = out.stdout.strip().splitlines()[-1:] or out.stderr.strip().splitlines()[-1:]
    note = f"-m gpu, {len(files)} files: {tail[0] if tail else 'no output'}"
    failed = counts.get("failed", 0) + counts.get("error", 0)
    if out.returncode != 0:  # 5: nothing collected; 2-4: interrupted, usage, internal error
        failed = max(failed, 1)
        note += f" (pytest exit {out.returncode})"
    return [
        check_line("pytest", "gpu tests failed", float(failed), "tests", 0, op="<=", note=note),
        check_line("pytest", "gpu tests passed", float(counts.get("passed", 0)), "tests", 1,
                   note=f"{counts.get('skipped', 0)} skipped, "
                   f"{time.perf_counter() - start:.0f} s"),
    ]  # fmt: skip
