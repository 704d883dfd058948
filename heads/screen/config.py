"""`ScreenConfig`: every screening knob, each default with the reason it holds.

No default depends on the true noise rate: the thresholds act on mixture posteriors and on
agreement between independent signals, which adapt to the noise level of each class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from heads.screen.probe import ProbeConfig


@dataclass
class ScreenConfig:
    """Screening rounds 0..R: signals, partition thresholds, tail protection, stop rule."""

    # Rounds >= 1 retrain (cross-fitted halves) and re-partition; 2 are enough on the bench:
    # the third changes < 1% of states.
    rounds: int = 2
    # kNN: measured on the bench (200 classes, imbalance 20, 30% noise): k = 5/10/20/40 give
    # top-1 64.9/65.1/65.2/64.9, flat; 10 is as good as 20 at half the search cost.
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
    # Share of the independent voters (model, kNN, prototypes) that must name the new class.
    relabel_agree: float = 1.0
    # A sample every voter assigns to one other class, whose consensus beats the given
    # label's by this much, is noisy whatever its mixture posterior (similar-class flips).
    # None = off. 0.1 (with margin_scores) lifts recall 9-13 points but costs 2-11 points of
    # precision and 0.4-0.7 top-1 at 10-30% noise (+0.2 at 60%): off by default.
    override_margin: float | None = None
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
    # Rank each signal within its class (per-class ranks) before averaging. Measured top-1
    # on/off: 84.7/84.8 (10% noise), 64.5/65.5 (30%), 39.5/39.9 (60%): off by default.
    rank_within_class: bool = False
    # Score model and kNN by the margin of the given label over the best other class
    # (measured together with override_margin, same verdict).
    margin_scores: bool = False
    # Dropped samples learn the consensus of the other classes (weight = its peak) instead
    # (NeaR-style). Measured top-1 on/off: 84.8/85.0 (10% noise), 65.5/64.4 (30%),
    # 39.9/36.6 (60%): on.
    soft_relabel: bool = True
    # SRRS re-screening: a probe trained on the clean samples only must confirm every relabel.
    # Relabel accuracy rises (0.77->0.82 at 10% noise) but top-1 does not move (84.8/84.8,
    # 65.0/65.1, 39.8/39.9): off, it costs two probe fits per round.
    verify_relabels: bool = False
    # Clean-probe relabeling: flagged (ambiguous / relabeled / dropped) samples move to the
    # top class of a probe trained on the clean samples only when it has probability >=
    # clean_probe_bar and kNN names it too. Full grid on/off: 85.4/85.5, 65.5/65.5,
    # 39.8/39.7, 44.4/44.4, 43.6/43.6, 31.6/31.6 (bench/NOISY.md): neutral, off.
    clean_probe_relabel: bool = False
    clean_probe_bar: float = 0.5
    # DFR-like calibration (bench option): train the final head only on the class-balanced,
    # most trusted clean subset (`heads.screen.calibrate`). Off: it cost 2.5 points on the bench.
    dfr_calibration: bool = False
    # SRRS mixup: the probe (train_fn and the bench's final probe) mixes every low-confidence
    # sample (ambiguous, soft-relabeled) with a high-confidence one of its target class,
    # lam ~ Beta(mixup_alpha, mixup_alpha). Sets probe.mixup_alpha. Bench on/off: 85.3/85.5,
    # 65.4/65.5, 39.1/39.7 (alpha 0.2 and 1.0 no better on --quick): off.
    mixup_low_confidence: bool = False
    mixup_alpha: float = 0.4
    # Candidate labels: ambiguous samples' targets become uniform over {given, kNN top,
    # model top} and the probe learns them with the partial-label loss -log sum_S p
    # (sets probe.partial_label). Full grid on/off within +-0.1 everywhere (85.4/85.5,
    # 65.6/65.5, 39.6/39.7, 44.4/44.4, 43.5/43.6, 31.6/31.6): neutral, off, since it also
    # changes the targets an external train_fn gets (ambiguous rows uniform over candidates).
    candidate_labels: bool = False
    seed: int = 0
    # Where the kNN search, the frozen signals and the round-0 probe run: "auto" (CUDA when
    # present), "cpu" or "cuda[:i]". Sets probe.device. Rounds >= 1 train the student on its
    # own device; the partition runs on the CPU.
    device: str = "auto"
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    def __post_init__(self):
        if isinstance(self.probe, dict):
            self.probe = ProbeConfig(**self.probe)
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:i], got {self.device!r}")
        self.probe = replace(self.probe, device=self.device)
        if self.mixup_low_confidence:
            self.probe = replace(self.probe, mixup_alpha=self.mixup_alpha)
        if self.candidate_labels:
            self.probe = replace(self.probe, partial_label=True)
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
