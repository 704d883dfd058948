"""Timing, hardware detection and output shared by the stage benchmarks.

Every benchmark follows the same recipe: set up outside the timer, warm up, synchronise the
GPU around each timed call, report the median of repeats as items per second.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch


def _sync() -> None:

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object], *, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall-clock seconds of `fn()` over `repeats` runs, after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rate(items: int, seconds: float) -> float:
    """Items per second, 0 when nothing was timed."""
    return items / seconds if seconds > 0 else 0.0


def peak_memory_mb() -> float:
    """Peak GPU memory when on a GPU, else this process's peak resident set size."""

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hardware() -> dict:
    """What the figures were measured on: they mean nothing without it."""

    info = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain fixed-width table; floats get thousands separators and one decimal."""

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:,.1f}"
        return "" if value is None else str(value)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _rss_mb() -> float:
    """Current resident set size of this process (Linux /proc; 0 where it is unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """Peak memory of one block of work: GPU allocations on CUDA, else sampled RSS.

    `peak_memory_mb()` is the process-wide high-water mark, which only grows; a stage's own
    peak needs a reset (CUDA) or sampling while it runs (CPU: a thread reads RSS every 20 ms).

        with PeakMemory() as mem:
            work()
        mem.peak_mb
    """

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._cuda = False
        self._stop = None
        self._thread = None

    def __enter__(self) -> PeakMemory:

        self._cuda = torch.cuda.is_available()
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
            return self
        self.peak_mb = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, _rss_mb())

    def __exit__(self, *exc) -> None:
        if self._cuda:
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
            return
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, _rss_mb())


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (platform.processor() is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
