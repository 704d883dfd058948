"""Noisy-label screening: find, relabel and down-weight noisy samples, protecting the tail.

from heads.screen import ScreenConfig, ScreenInputs, run_screening
result = run_screening(ScreenInputs(embed, labels, num_classes=K), ScreenConfig(), train_fn)
result.state, result.targets, result.weights   # (N,), (N, K), (N,)

The core (`ScreenConfig`) scores every sample by the registered signals (`evidence.py`) and
partitions; the seed papers' other methods are extras switched on by name:
`ScreenConfig(extras=("srrs-verify", "dfr"))`, valid names `extras.available()`.
"""

from heads.screen.config import ScreenConfig
from heads.screen.partition import STATES
from heads.screen.rounds import ScreenInputs, ScreenResult, run_screening

__all__ = ["STATES", "ScreenConfig", "ScreenInputs", "ScreenResult", "run_screening"]
