"""Screening extras: the seed papers' methods, off by default, switched on by name.

    ScreenConfig(extras=("srrs-verify", "dfr"))      # engine train --screen-extra dfr
    available()                                       # the valid names, sorted

Each was measured neutral or harmful on the noisy bench (bench/NOISY.md), so none is part of
the core; each is a small module with its own config dataclass:
- `srrs-verify` (`verify.py`): SRRS re-screening, a probe trained on the clean samples only
  must confirm every relabel, else the sample is dropped.
- `srrs-mixup` (`mixup.py`): SRRS low-confidence mixup in the screening's probe.
- `candidate-labels` (`candidates.py`): ambiguous samples learn a candidate set with a
  partial-label loss.
- `dfr` (`dfr.py`): DFR-style last-layer recalibration: the final model trains on a
  class-balanced subset of the most trusted clean samples only.

The folder-mixture relabeling stage (issue 18) began as an extra here; measured to gain in
every cell of the bench once classes got sub-means, it is now part of the core
(`heads/screen/relabel.py`, `ScreenConfig.mixture`).
"""

from __future__ import annotations

from heads.screen.extras import candidates, dfr, mixup, verify  # noqa: F401
from heads.screen.extras.base import EXTRAS, Extra, RoundView, register_extra
from heads.screen.probe import ProbeHooks

__all__ = ["EXTRAS", "Extra", "RoundView", "available", "build", "check_extras",
           "probe_hooks", "register_extra"]  # fmt: skip


def available() -> list[str]:
    """Names of every registered extra, sorted (the CLI's choices)."""
    return EXTRAS.names()


# Extras that became part of the core: a config or command line naming one is told where it went.
MOVED_TO_CORE = {
    "folder-mixture": "the folder-mixture stage is part of screening now and on by default "
    "(--no-folder-mixture, or `mixture: null` in the screen section, switches it off)",
}


def check_extras(names: tuple[str, ...]) -> None:
    """Refuse an unknown or repeated name with one line naming the valid ones."""
    for name in names:
        if name in MOVED_TO_CORE:
            raise EXTRAS.error(f"screening extra {name!r} is gone: {MOVED_TO_CORE[name]}")
        EXTRAS.get(name)
    if len(set(names)) != len(names):
        raise EXTRAS.error(f"screening extras named twice: {list(names)}")


def build(names: tuple[str, ...]) -> list[Extra]:
    """One extra per name, each with its default config, in the given order."""
    check_extras(names)
    return [EXTRAS.get(name)() for name in names]


def probe_hooks(extras: list[Extra]) -> ProbeHooks:
    """The probe hooks of all `extras` together: loss changes apply in order; at most one
    extra may replace the probe's inputs."""
    hooks = [extra.probe_hooks() for extra in extras]
    mixes = [h.mix for h in hooks if h.mix is not None]
    if len(mixes) > 1:
        raise EXTRAS.error("at most one screening extra may mix the probe's inputs")
    losses = [h.loss for h in hooks if h.loss is not None]

    def loss(per, logits, targets):
        for fn in losses:
            per = fn(per, logits, targets)
        return per

    return ProbeHooks(mix=mixes[0] if mixes else None, loss=loss if losses else None)
