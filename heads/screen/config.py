"""`ScreenConfig`: the core screening knobs, each default with the reason it holds.

The seed papers' methods measured neutral or harmful on the bench are not knobs here but
extras (`heads.screen.extras`), switched on by name: `ScreenConfig(extras=("dfr",))`.
Options measured useless that were no seed method are gone (`override_margin` /
`margin_scores`, `rank_within_class`, `clean_probe_relabel`; bench/NOISY.md keeps their
measurements); `knn_temperature` and `relabel_agree` became constants of `signals` and
`partition`, and the probe's device and seed follow this config's.

No default depends on the true noise rate: the thresholds act on mixture posteriors and on
agreement between independent signals, which adapt to the noise level of each class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import ClassVar

from engine import config
from engine.ranges import NON_NEGATIVE, POSITIVE, UNIT, Interval, check_ranges
from heads.screen.extras import check_extras
from heads.screen.probe import ProbeConfig
from heads.screen.relabel import FolderMixtureConfig


@dataclass
class ScreenConfig:
    """Screening rounds 0..R: signals, partition thresholds, tail protection, stop rule."""

    # Rounds >= 1 retrain (cross-fitted halves) and re-partition; 2 are enough on the bench:
    # the third changes < 1% of states.
    rounds: int = 2
    # kNN: measured on the bench (200 classes, imbalance 20, 30% noise): k = 5/10/20/40 give
    # top-1 64.9/65.1/65.2/64.9, flat; 10 is as good as 20 at half the search cost.
    knn_k: int = 10
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
    # Zero-shot softmax temperature: CLIP's own 0.01 (logit scale 100). None = fitted to the
    # given labels by NLL (calibrated, catches 8x more out-of-set samples) but the flatter
    # consensus then clears the relabel bars far less often: 64.8 vs 65.1 top-1 on the bench.
    zero_shot_temperature: float | None = 0.01
    # Dropped samples learn the consensus of the other classes (weight = its peak) instead
    # (NeaR-style). Measured top-1 on/off: 84.8/85.0 (10% noise), 65.5/64.4 (30%),
    # 39.9/36.6 (60%): on.
    soft_relabel: bool = True
    # Seeds the folds, the halves of every round and the probe: one seed, one result.
    seed: int = 0
    # Where the kNN search, the frozen signals and the round-0 probe run: "auto" (CUDA when
    # present), "cpu" or "cuda[:i]". Rounds >= 1 train the student on its own device; the
    # partition runs on the CPU.
    device: str = "auto"
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    # The relabeling stage after the last round (heads/screen/relabel.py, issue 18): every
    # folder a mixture of true classes, the final targets its EM's responsibilities. Measured
    # on the reduced grid (16 cells: 4 settings x 2 flip priors x plain / realistic
    # simulator): it gains in every cell (bench/NOISY.md, "Folder mixture"): on. None: off.
    mixture: FolderMixtureConfig | None = field(default_factory=FolderMixtureConfig)
    # Seed papers' methods that are off by default, by name (`heads.screen.extras.available()`):
    # each was measured neutral or harmful on the bench (bench/NOISY.md) but stays usable.
    extras: tuple[str, ...] = ()

    # Every float field and its valid interval (engine.ranges: finite, in range, one line).
    RANGES: ClassVar[dict[str, Interval]] = {
        "trim": Interval(0.0, 1.0, high_open=True), "clean_posterior": UNIT,
        "noisy_posterior": UNIT, "ambiguous_weight": UNIT, "relabel_bar_tail": UNIT,
        "relabel_bar_head": UNIT, "out_of_set_bar": UNIT,
        "max_noisy_share": Interval(0.0, 1.0, low_open=True), "pool_strength": NON_NEGATIVE,
        "stop_change": UNIT, "zero_shot_temperature": replace(POSITIVE, optional=True),
    }  # fmt: skip

    def __post_init__(self):
        if isinstance(self.probe, dict):
            self.probe = config.from_dict(ProbeConfig, self.probe, where="screen.probe")
        if isinstance(self.mixture, dict):
            self.mixture = config.from_dict(FolderMixtureConfig, self.mixture,
                                            where="screen.mixture")  # fmt: skip
        check_ranges(self, self.RANGES, "screen")
        self.extras = tuple(self.extras)
        check_extras(self.extras)
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:i], got {self.device!r}")
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
        """Plain JSON-able values (the probe as a dict, extras as a list once in JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ScreenConfig:
        """Build from a dict such as `to_dict()`'s; unknown keys fail with the valid ones
        named (`engine.config.from_dict`, the one place that checks keys)."""
        return config.from_dict(cls, d, where="screen")
