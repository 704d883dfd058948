"""Finite, range-checked float options: one rule for every config dataclass.

    RANGES = {"lr_head": POSITIVE, "wise_alpha": UNIT}
    check_ranges(self, RANGES, "train")     # in __post_init__
    # -> UserError("train.lr_head must be a finite number in (0, inf), got nan")

NaN passes every comparison (`nan <= 0` is False), so a hand-written `if lr <= 0` lets it
through and a run trains a NaN model; here a value must be a real, finite number inside its
interval. A leaf module: it imports nothing of the project but `engine.errors`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.errors import UserError


@dataclass(frozen=True)
class Interval:
    """[low, high] with either end open; `optional` also admits None."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    optional: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return math.isfinite(value) and above and below

    def __str__(self) -> str:
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{left}{self.low:g}, {self.high:g}{right}" + (" or null" if self.optional else "")


POSITIVE = Interval(0.0, math.inf, low_open=True, high_open=True)
NON_NEGATIVE = Interval(0.0, math.inf, high_open=True)
UNIT = Interval(0.0, 1.0)  # shares, probabilities, interpolation weights


def check_ranges(cfg, ranges: dict[str, Interval], section: str) -> None:
    """One line naming `section.key`, the value and the valid range for the first float
    field of `cfg` outside its interval (or not a number at all)."""
    for key, interval in ranges.items():
        value = getattr(cfg, key)
        if value is None and interval.optional:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not interval.holds(float(value)):
            raise UserError(f"{section}.{key} must be a finite number in {interval}, got {value!r}")
