"""One thread budget for the features pass: decode threads, store writers and the feeder share
the cores this process may use, instead of each taking all of them.

On 16 cores DALI used to take 16 threads beside the 4 store writers, DALI's host feeder and
the main loop (22 busy threads on 16 cores): the writers, which the pass waits on, lost their
cores to decode threads that had nothing to decode. The budget gives the writers and the two
Python threads theirs first and the decoder the rest.

    budget = thread_budget()          # 16 cores: ThreadBudget(cores=16, decode=10, writers=4, ...)
    loader = make_loader(..., workers=budget.decode)
"""

from __future__ import annotations

from dataclasses import dataclass

from features.chunks import WRITERS
from shards.cpus import available_cpus

FEEDER_THREADS = 1  # DALI's host feeder (bytes + geometry one batch ahead)
MAIN_THREADS = 1  # the loop that submits batches and hands chunks to the writers


@dataclass(frozen=True)
class ThreadBudget:
    cores: int
    decode: int
    writers: int
    feeder: int = FEEDER_THREADS
    main: int = MAIN_THREADS

    def __str__(self) -> str:
        return (f"{self.cores} cores: {self.decode} decode, {self.writers} store writers, "
                f"{self.feeder} feeder, {self.main} main")  # fmt: skip


def thread_budget(cores: int | None = None) -> ThreadBudget:
    """How the features pass splits `cores` (default: the cores this process may use)."""
    cores = available_cpus() if cores is None else cores
    decode = max(1, cores - WRITERS - FEEDER_THREADS - MAIN_THREADS)
    return ThreadBudget(cores=cores, decode=decode, writers=WRITERS)
