"""What a screening extra is: a seed paper's method hooked into the core rounds.

    @register_extra("my-method")
    class MyMethod(Extra):
        Config = MyConfig
        def on_partition(self, part, view): ...

Every hook defaults to "no change", so an extra overrides only the steps it acts on, in
this order within a round: the probe's learning (`probe_hooks`, whenever the screening's
own probe trains), the partition (`on_partition`), the targets (`on_targets`); and once
after the last round, the result (`on_result`). Notation: N samples, K classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import UserError
from engine.registry import Registry
from heads.screen.partition import Partition
from heads.screen.probe import ProbeHooks


@dataclass
class RoundView:
    """What an extra may read in a round: the inputs, the config and every signal's evidence
    (`heads.screen.evidence.Evidence` by signal name)."""

    inputs: object  # heads.screen.rounds.ScreenInputs
    cfg: object  # heads.screen.config.ScreenConfig
    evidence: dict


@dataclass
class NoOptions:
    """Config of an extra without options."""


class Extra:
    """Base of every extra; `Config` is its options dataclass, built with defaults."""

    Config: type = NoOptions

    def __init__(self, cfg=None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()

    def probe_hooks(self) -> ProbeHooks:
        return ProbeHooks()

    def on_partition(self, part: Partition, view: RoundView) -> Partition:
        return part

    def on_targets(self, targets: np.ndarray, weights: np.ndarray, part: Partition,
                   view: RoundView) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        return targets, weights

    def on_result(self, result, inputs):
        return result


EXTRAS: Registry[type[Extra]] = Registry("screening extra", error=UserError)


def register_extra(name: str):
    """Decorator: register an `Extra` subclass as `name` (a duplicate name is refused)."""
    return EXTRAS.register(name)
