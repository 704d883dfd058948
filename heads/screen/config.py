"""`ScreenConfig`: every screening knob, each default with the reason it holds.

No default depends on the true noise rate: the thresholds act on mixture posteriors and on
agreement between independent signals, which adapt to the noise level of each class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from heads.screen.probe import ProbeConfig


@dataclass
class ScreenConfig:
    """Screening rounds 0..R: signals, partition thresholds, tail protection, stop rule."""

    # Rounds >= 1 retrain (cross-fitted halves) and re-partition; 2 are enough on the bench:
    # the third changes < 1% of states.
    rounds: int = 2
    # kNN: k = 10 measured best on the bench among 5/10/20/40 (larger k drowns small classes).
    knn_k: int = 10
    # Softmax temperature of neighbour weights (cosines of CLIP neighbours differ by ~0.05).
    knn_temperature: float = 0.05
    # Out-of-fold probe in round 0: 5 folds leave 80% of each class for training.
    folds: int = 5
    # Trimmed-mean prototypes drop this share of each class farthest from its mean.
    trim: float = 0.3
    # Mixture posterior of the clean component: >= clean_posterior is clean, < noisy_posterior
    # noisy, in between ambiguous.
    clean_posterior: float = 0.6
    noisy_posterior: float = 0.4
    # Weight of ambiguous samples (soft targets): half a vote, as SRRS's rectified samples.
    ambiguous_weight: float = 0.5
    # Consensus probability a noisy sample's new class needs; head classes (by given count)
    # need more, since wrong moves into large classes are what erase the tail.
    relabel_bar_tail: float = 0.5
    relabel_bar_head: float = 0.7
    # A noisy sample whose best class has consensus below this is out-of-set.
    out_of_set_bar: float = 0.25
    # Tail protection: at most this share of a class is marked noisy, and its `min_keep`
    # most trusted samples always stay clean (a class is never emptied).
    max_noisy_share: float = 0.8
    min_keep: int = 3
    # Mixture pooling: a class's parameters are shrunk toward the pooled fit with the weight
    # of this many samples, so a class of 3 borrows almost everything from the pool.
    pool_strength: float = 20.0
    # Stop when fewer than this share of samples change state between rounds.
    stop_change: float = 0.01
    # Ambiguous samples learn a soft target (given label mixed with the consensus of
    # probe/model, neighbours (NeaR) and zero-shot) instead of their hard label.
    soft_targets: bool = True
    seed: int = 0
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    def __post_init__(self):
        if isinstance(self.probe, dict):
            self.probe = ProbeConfig(**self.probe)
        if self.rounds < 0 or self.knn_k < 1 or self.folds < 2 or self.min_keep < 1:
            raise ValueError(
                f"need rounds >= 0, knn_k >= 1, folds >= 2, min_keep >= 1; got {self.rounds}, "
                f"{self.knn_k}, {self.folds}, {self.min_keep}"
            )
        if not 0 <= self.noisy_posterior <= self.clean_posterior <= 1:
            raise ValueError(
                f"need 0 <= noisy_posterior <= clean_posterior <= 1, got "
                f"{self.noisy_posterior}, {self.clean_posterior}"
            )
        if not 0 < self.max_noisy_share <= 1:
            raise ValueError(f"max_noisy_share must be in (0, 1], got {self.max_noisy_share}")

    def to_dict(self) -> dict:
        return asdict(self)
