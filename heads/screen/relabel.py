"""The relabeling stage: after the last round, every folder is treated as a mixture of true
classes (`heads.screen.folder_mixture`) and the final targets become its responsibilities
(issue 18). On by default (`ScreenConfig.mixture`; None, or `engine train --no-folder-mixture`,
switches it off).

    relabel(result, inputs, FolderMixtureConfig(), signals)
    result.mixture_class, result.mixture_prob    # (N,) proposed true class and its probability

Screening keeps its states and its confident clean set: the clean samples seed the EM (class
sub-means, shared covariance, each folder's initial composition), and the out-of-set state is
the background weight. The final targets are the EM's class responsibilities (renormalised,
tails under `min_target` cut) and the weights 1 - the background responsibility.
`rows="flagged"` replaces only the samples screening did not keep as clean; `gate` replaces a
row only where the EM's class is also the argmax of the neighbours' label votes ("knn"), of
the last round's cross-fitted student ("student") or both; `use_student` multiplies the
(tempered, `options.gaussian_temperature`) Gaussian likelihood by the student's
probabilities. Bench: bench/NOISY.md ("Folder mixture").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from engine.ranges import UNIT, Interval, check_ranges
from heads.screen.folder_mixture import MixtureOptions, fit_folder_mixture
from heads.screen.partition import CLEAN, OUT_OF_SET

ROWS = ("all", "flagged")
# Which signals must name the EM's class before a row's target is replaced ("model": the
# last round's cross-fitted student; "knn": the neighbours' label votes). Each is blind to the
# Gaussian's shape: the student is discriminative, the neighbours local (they follow sub-
# clusters and curved classes a class mean cannot).
GATES = {"off": (), "student": ("model",), "knn": ("knn",), "student+knn": ("model", "knn")}


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
    # Multiply the Gaussian likelihood by the cross-fitted student's probabilities.
    use_student: bool = False
    # Replace a row's target only where these signals' argmax is the EM's class (GATES).
    # "off": with one mean per class the gate was needed (ungated it lost 3.1-6.2 points on the
    # realistic simulator, whose classes hold sub-types); with sub-means the ungated stage
    # gains in every measured cell and the "knn" gate keeps only a third to a half of that
    # gain on the plain simulator (bench/NOISY.md).
    gate: str = "off"
    # Responsibilities under this are cut (and the rest renormalised): the EM's tails are
    # 1e-10-small, and cutting them keeps the (N, K) targets sparse on disk.
    min_target: float = 1e-3
    device: str = "auto"
    options: MixtureOptions = field(default_factory=MixtureOptions)

    RANGES: ClassVar[dict[str, Interval]] = {"background": UNIT, "background_floor": UNIT,
                                             "min_target": Interval(0.0, 0.5)}  # fmt: skip

    def for_screening(self, seed: int, device: str) -> FolderMixtureConfig:
        """This config as screening runs it: its k-means draws seeded by screening's seed, and
        on screening's device where its own is "auto"."""
        out = replace(self, options=replace(self.options, seed=seed))
        return out if self.device != "auto" else replace(out, device=device)

    def __post_init__(self):
        check_ranges(self, self.RANGES, "folder_mixture")
        if self.rows not in ROWS:
            raise ValueError(f"folder-mixture rows must be one of {ROWS}, got {self.rows!r}")
        if self.gate not in GATES:
            raise ValueError(
                f"folder-mixture gate must be one of {tuple(GATES)}, got {self.gate!r}"
            )
        if self.use_student and self.use_consensus:
            raise ValueError("folder-mixture: use_student and use_consensus exclude each other")
        if not 0 <= self.background_floor <= self.background < 1:
            raise ValueError(
                f"need 0 <= background_floor <= background < 1, got "
                f"{self.background_floor}, {self.background}"
            )


def background_weights(state: np.ndarray, cfg: FolderMixtureConfig) -> np.ndarray:
    """(N,) fixed background weight: `background` where screening said out-of-set."""
    return np.where(state == OUT_OF_SET, cfg.background, cfg.background_floor)


def gate_rows(result, em_class, signals: dict, cfg: FolderMixtureConfig) -> np.ndarray | None:
    """(N,) bool rows whose targets the EM replaces (None: every row)."""
    rows = None if cfg.rows == "all" else result.state != CLEAN
    for name in GATES[cfg.gate]:
        agree = em_class == signals[name].argmax(1)
        rows = agree if rows is None else rows & agree
    return rows


def relabel(result, inputs, cfg: FolderMixtureConfig, signals: dict | None = None):
    """`result` with the EM's targets, weights, proposed class and its probability.
    `signals`: (N, K) probabilities by evidence name ("model": the last round's cross-fitted
    student, "knn"), as `gate` and `use_student` need them; the extra passes the last round's."""
    signals = signals or {}
    need = set(GATES[cfg.gate]) | ({"model"} if cfg.use_student else set())
    if need - signals.keys():
        raise ValueError(f"folder-mixture: gate/use_student need the {sorted(need)} signals")
    likelihood = signals["model"] if cfg.use_student else None
    fit = fit_folder_mixture(
        inputs.embed, inputs.labels, inputs.num_classes,
        seed_mask=result.state == CLEAN, background=background_weights(result.state, cfg),
        text_embed=inputs.text_embed if cfg.use_text else None,
        consensus=result.consensus if cfg.use_consensus else likelihood,
        opts=cfg.options, device=cfg.device,
    )  # fmt: skip
    soft = fit.resp  # normalised in place: one (N, K) array less (1.8 GB at 300k x 1500)
    soft /= np.maximum(soft.sum(1, keepdims=True), 1e-12)
    best = soft.argmax(1)
    prob = np.take_along_axis(soft, best[:, None], 1)[:, 0]
    soft[soft < cfg.min_target] = 0  # the argmax always stays (its share is >= 1/K)
    soft[np.arange(len(best)), best] = np.maximum(prob, 1e-12)
    soft /= soft.sum(1, keepdims=True)
    rows = gate_rows(result, best, signals, cfg)
    if rows is None:
        targets, weights = soft, 1 - fit.background
    else:
        targets = np.array(result.targets, np.float32, copy=True)
        weights = np.array(result.weights, np.float32, copy=True)
        targets[rows] = soft[rows]
        weights[rows] = 1 - fit.background[rows]
    return replace(result, targets=targets, weights=weights, mixture_class=best,
                   mixture_prob=prob.astype(np.float32))  # fmt: skip
