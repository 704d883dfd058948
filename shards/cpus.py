"""How many CPU cores this process may use (its affinity mask, not the machine's count).

A job scheduler or `taskset` often gives a process fewer cores than `os.cpu_count()` reports;
sizing thread and process pools by the mask avoids oversubscribing them.

    workers = min(16, available_cpus())
"""

from __future__ import annotations

import os


def available_cpus() -> int:
    """Cores this process may run on (at least 1)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
