"""Configuration of `engine train` (the trainer in `heads.trainer`).

    cfg = TrainConfig(unfreeze_last=2, seed=0)
    trained = heads.trainer.fit(store, cfg)

Few knobs on purpose: the tail's weight decay, the learning-rate schedule, the class prior of
the logit adjustment and the cached-depth handling are derived, not exposed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

from engine import config
from engine.errors import UserError
from engine.ranges import NON_NEGATIVE, POSITIVE, UNIT, Interval, check_ranges
from heads.head import HEADS
from heads.losses import GCE_Q, LOSSES


@dataclass
class TrainConfig:
    """Options of one training run.

    Attributes:
        unfreeze_last: k, trailing ViT blocks trained (with ln_post and proj); 0 = head only
            on the stored embeddings. The feature store must have depth >= k.
        epochs_lp: linear-probe epochs (head only, tail frozen): LP-FT (Kumar et al. 2022)
            aligns the head before the tail moves, so random-head gradients never distort it.
        epochs_ft: epochs with the last k blocks unfrozen (ignored when k = 0).
        batch_size: samples per step; None = 512, except head-only (k = 0) on CUDA, where a
            short timed probe picks it and scales lr_head with it (`heads.head_batch`).
        lr_head: AdamW learning rate of the head.
        lr_tail: AdamW learning rate of the unfrozen blocks (much smaller than the head's).
        weight_decay: AdamW weight decay of the head; the tail gets L2-SP instead.
        loss: a name registered in `heads.losses.LOSSES`.
        tau: logit adjustment strength (Menon et al. 2021): train on logits + tau*log(prior)
            so the raw logits fit the balanced test set; 0 turns it off. Applies to every loss.
        gce_q: exponent of the generalized cross-entropy (q -> 0: CE, q = 1: MAE).
        sce_alpha: CE weight of the symmetric cross-entropy.
        sce_beta: reverse-CE weight of the symmetric cross-entropy.
        l2sp: strength of the L2-SP penalty l2sp/2 * ||theta - theta_pretrained||^2 on the tail.
        wise_alpha: WiSE-FT: final tail = pretrained + alpha * (trained - pretrained);
            1 keeps the fine-tuned weights, 0 gives back the pretrained ones exactly.
        head: a name registered in `heads.head.HEADS`: "cosine" (normalised weights, scaled
            by 1/temperature) or "linear".
        temperature: softmax temperature of the cosine head (logit scale 1/temperature).
        seed: seeds the batch order and the view draws; same seed, same model on the CPU.
        device: "auto" (CUDA when present), "cpu" or "cuda[:i]".
        views: cached views used as augmentation (None = all the store holds); view 0 is the
            eval view, so views=1 trains on exactly what prediction sees.
        deterministic: deterministic kernels on the GPU (`heads.numerics`); False trades
            bit-exact re-runs for whatever speed the non-deterministic kernels give.
    """

    unfreeze_last: int = 0
    # 10 passes over cached features cost seconds; the head converges well before (LP is convex).
    epochs_lp: int = 10
    # A few passes: the tail starts from CLIP and L2-SP + WiSE keep it near; more overfits noise.
    epochs_ft: int = 5
    # 512 keeps the GPU busy with a tail and still gives ~200 steps/epoch at 100k samples; a
    # head-only step is launch-bound at 512, so there the batch is measured (heads.head_batch).
    batch_size: int | None = None
    # AdamW on a prototype-initialised head: 1e-3 moves it in a few epochs without overshoot.
    lr_head: float = 1e-3
    # CLIP fine-tuning folklore (WiSE-FT, FLYP): ~1e-5; larger forgets pretrained features.
    lr_tail: float = 1e-5
    # Mild: the head is already regularised by its cosine form and prototype init.
    weight_decay: float = 1e-4
    # GCE is robust to 20-50% label noise (Zhang & Sabuncu 2018) yet still fits the tail.
    loss: str = "gce"
    # tau = 1 is the Bayes-optimal shift for a balanced test set (Menon et al. 2021).
    tau: float = 1.0
    # q = 0.5 sits between CE (fits noise) and MAE (underfits many classes).
    gce_q: float = GCE_Q
    # Wang et al. 2019 with many classes: CE carries the learning, RCE the robustness.
    sce_alpha: float = 1.0
    sce_beta: float = 1.0
    # Li et al. 2018 use 1e-2..1e-1 with SGD; with a 1e-5 AdamW step drift is small anyway.
    l2sp: float = 1e-2
    # Wortsman et al. 2022: interpolation keeps robustness; 0.8 keeps most of the fit.
    wise_alpha: float = 0.8
    # Cosine heads are balanced across classes by construction (no norm grows with count).
    head: str = "cosine"
    # Logit scale 20: sharp enough for 1500 classes, soft enough for noisy labels.
    temperature: float = 0.05
    seed: int = 0
    device: str = "auto"
    views: int | None = None
    # Deterministic GPU kernels (heads.numerics): a seeded run re-makes the same model.
    deterministic: bool = True

    # Every float field and its valid interval (engine.ranges: finite, in range, one line).
    RANGES: ClassVar[dict[str, Interval]] = {
        "lr_head": POSITIVE, "lr_tail": POSITIVE, "weight_decay": NON_NEGATIVE,
        "tau": NON_NEGATIVE, "gce_q": Interval(0.0, 1.0, low_open=True),
        "sce_alpha": NON_NEGATIVE, "sce_beta": NON_NEGATIVE, "l2sp": NON_NEGATIVE,
        "wise_alpha": UNIT, "temperature": POSITIVE,
    }  # fmt: skip

    def __post_init__(self) -> None:
        if not 0 <= self.unfreeze_last <= 12:
            raise UserError(f"unfreeze_last must be in 0..12, got {self.unfreeze_last}")
        if self.epochs_lp < 0 or self.epochs_ft < 0 or self.epochs_lp + self.epochs_ft < 1:
            raise UserError(
                f"epochs must be >= 0 and not both 0, got epochs_lp={self.epochs_lp}, "
                f"epochs_ft={self.epochs_ft}"
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"batch_size must be >= 1 or None (auto), got {self.batch_size}")
        LOSSES.get(self.loss)  # the registries name the valid choices in one line
        HEADS.get(self.head)
        check_ranges(self, self.RANGES, "train")
        if self.views is not None and self.views < 1:
            raise UserError(f"views must be >= 1 or None (all), got {self.views}")

    @property
    def epochs(self) -> int:
        """Total epochs: the FT phase exists only when blocks are unfrozen."""
        return self.epochs_lp + (self.epochs_ft if self.unfreeze_last > 0 else 0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from a dict; unknown keys fail with the valid ones named (`engine.config`)."""
        return config.from_dict(cls, d, where="train")
