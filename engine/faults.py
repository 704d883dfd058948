"""Crash points for fault-injection tests: a process kills itself at a chosen phase boundary.

    fault_point("lp-epoch")      # one line where a phase step has just finished

With `ENGINE_FAULT_AT=<point>[:<n>]` in the environment, the n-th time (default: the first)
that the process reaches `<point>` it sends itself SIGKILL: no cleanup, no `finally`, no
flush, exactly what a power cut or the out-of-memory killer does. Without the variable a
call costs one dictionary lookup. `tests/test_faults.py` kills `engine train` and
`engine predict` this way in every phase and checks that running them again gives the
same bytes as an uninterrupted run. `ENGINE_FAULT_SIGNAL=INT` sends SIGINT to the whole
process group instead, as Ctrl-C in a terminal does (workers included), and lets it run on.

Points: `shard-file` (a file packed), `features-batch` (a batch of the feature pass
computed), `screen-round` (a screening round saved), `lp-epoch` / `ft-epoch` (a training
epoch checkpointed), `predict-batch` (a batch of images predicted).
"""

from __future__ import annotations

import os
import signal

ENV = "ENGINE_FAULT_AT"
SIGNAL_ENV = "ENGINE_FAULT_SIGNAL"

_hits: dict[str, int] = {}


def fault_point(point: str) -> None:
    """SIGKILL this process if `ENGINE_FAULT_AT` names `point` and its count is reached."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    name, _, count = wanted.partition(":")
    if name != point:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] != int(count or 1):
        return
    if os.environ.get(SIGNAL_ENV, "KILL") == "INT":
        os.killpg(os.getpgid(0), signal.SIGINT)
    else:
        os.kill(os.getpid(), signal.SIGKILL)
