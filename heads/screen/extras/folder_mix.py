"""`folder-mixture`: after the last round, every folder is treated as a mixture of true
classes (`heads.screen.folder_mixture`) and the final targets become its responsibilities.

    ScreenConfig(extras=("folder-mixture",))
    result.mixture_class, result.mixture_prob    # (N,) proposed true class and its probability

Screening keeps its states and its confident clean set: the clean samples seed the EM (class
means, shared covariance, each folder's initial composition), and the out-of-set state is
the background weight. The final targets are the EM's class responsibilities (renormalised)
and the weights 1 - the background responsibility; `rows="flagged"` replaces only the
samples screening did not keep as clean. Bench: bench/NOISY.md ("Folder mixture").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from heads.screen.extras.base import Extra, register_extra
from heads.screen.folder_mixture import MixtureOptions, fit_folder_mixture
from heads.screen.partition import CLEAN, OUT_OF_SET

ROWS = ("all", "flagged")


@dataclass
class FolderMixtureConfig:
    # Background weight of a sample screening put out of set, and of every other sample.
    background: float = 0.5
    background_floor: float = 0.02
    # "all": every sample learns the EM's responsibilities (sibling flips kept as clean by
    # screening are where the EM gains most); "flagged": only the non-clean ones.
    rows: str = "all"
    # Anchor the tail prior on the class-name text embeddings when given (else prototypes).
    use_text: bool = True
    # Multiply the Gaussian likelihood by the screening consensus (the "both" likelihood).
    use_consensus: bool = False
    device: str = "auto"
    options: MixtureOptions = field(default_factory=MixtureOptions)

    def __post_init__(self):
        if self.rows not in ROWS:
            raise ValueError(f"folder-mixture rows must be one of {ROWS}, got {self.rows!r}")
        if not 0 <= self.background_floor <= self.background < 1:
            raise ValueError(
                f"need 0 <= background_floor <= background < 1, got "
                f"{self.background_floor}, {self.background}"
            )


def background_weights(state: np.ndarray, cfg: FolderMixtureConfig) -> np.ndarray:
    """(N,) fixed background weight: `background` where screening said out-of-set."""
    return np.where(state == OUT_OF_SET, cfg.background, cfg.background_floor)


def relabel(result, inputs, cfg: FolderMixtureConfig):
    """`result` with the EM's targets, weights, proposed class and its probability."""
    fit = fit_folder_mixture(
        inputs.embed, inputs.labels, inputs.num_classes,
        seed_mask=result.state == CLEAN, background=background_weights(result.state, cfg),
        text_embed=inputs.text_embed if cfg.use_text else None,
        consensus=result.consensus if cfg.use_consensus else None,
        opts=cfg.options, device=cfg.device,
    )  # fmt: skip
    soft = fit.resp  # normalised in place: one (N, K) array less (1.8 GB at 300k x 1500)
    soft /= np.maximum(soft.sum(1, keepdims=True), 1e-12)
    if cfg.rows == "all":
        targets, weights = soft, 1 - fit.background
    else:
        rows = result.state != CLEAN
        targets = np.array(result.targets, np.float32, copy=True)
        weights = np.array(result.weights, np.float32, copy=True)
        targets[rows] = soft[rows]
        weights[rows] = 1 - fit.background[rows]
    best = soft.argmax(1)
    prob = np.take_along_axis(soft, best[:, None], 1)[:, 0]
    return replace(result, targets=targets, weights=weights, mixture_class=best,
                   mixture_prob=prob.astype(np.float32))  # fmt: skip


@register_extra("folder-mixture")
class FolderMixture(Extra):
    """After the last round: targets and weights from the folder-as-mixture EM."""

    Config = FolderMixtureConfig

    def on_result(self, result, inputs):
        return relabel(result, inputs, self.cfg)
