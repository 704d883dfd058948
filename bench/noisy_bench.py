"""Noisy-label benchmark: the engine's screening next to cross-entropy, cleanlab and an oracle.

    python -m bench.noisy_bench                      # mission-size grid (see bench/NOISY.md)
    python -m bench.noisy_bench --flip-prior size    # flips drawn in proportion to folder size
    python -m bench.noisy_bench --grid small         # the first cut's data-starved grid
    python -m bench.noisy_bench --grid quick         # two small settings (~1 min)
    python -m bench.noisy_bench --quick --extra dfr  # with a screening extra switched on
    python -m bench.noisy_bench --grid reduced --no-baselines --variant realistic

Data: `bench.synthetic` CLIP-like features (see its docstring for how hard they are). Every
row is scored by top-1 on the clean, balanced test set; noise-detection precision / recall
(flagged = relabeled, dropped or out-of-set) are given for cleanlab and for screening.

Rows, in two families. The issue's baselines train a plain softmax probe (cross-entropy, no
logit adjustment): CE on the noisy labels, and cleanlab `find_label_issues` on its 5-fold
pred_probs followed by CE on what it keeps. The same two baselines again with the engine's
own trainer (`heads.trainer.fit`, k = 0, cosine head, logit adjustment, CE), so that the
only difference left to the engine's rows is the noise handling. Then the engine as
`engine train` runs it: training alone (its defaults: GCE, no screening), and with screening
(`--rounds 2`: the trainer is the cross-fitted student of every round and trains the final
model on the screened targets with CE). Two upper bounds, both with the engine's trainer:
perfect screening (every noisy sample dropped, the rest kept: what an ideal detector that
drops reaches) and the oracle (the true labels, out-of-set samples removed: noisy samples
go back to their true class, which no screening of these folders can fully do).

Issue 18's rows: `engine + screening` is screening without the folder-mixture stage (the
engine before it, `ScreenConfig(mixture=None)`), `engine + folder mixture` the same
screening result relabeled by it, i.e. the engine as it runs by default (one
screening serves both, since the stage acts once after the last round); its "named" column is
the share of flipped samples whose proposed class is their true class. Every setting runs on
the plain simulator and on its realistic variant (`bench.synthetic.Realism`) unless
`--variant` picks one.
"""

from __future__ import annotations

import argparse
import ast
import logging
import time
from dataclasses import replace

import numpy as np
from tqdm import tqdm

import heads.trainer
from bench.synthetic import FLIP_PRIORS, Realism, make_noisy_features
from features.store import FeatureStore
from heads.config import TrainConfig
from heads.screen import ScreenConfig, ScreenInputs, extras, run_screening
from heads.screen.evidence import frozen_evidence
from heads.screen.partition import RELABELED
from heads.screen.probe import ProbeConfig, cross_fit_logits, one_hot, probe_train_fn, train_probe
from heads.screen.relabel import FolderMixtureConfig, relabel
from heads.screen.signals import softmax

log = logging.getLogger(__name__)

# (classes, imbalance, noise, max_per_class): noise 10-60%, imbalance 1-100, 200-1500 classes.
# Mission sizes: the mission's sets hold 100k-300k images in 500-1500 folders, i.e. 67-600
# per class; the folders here average ~65-130 images (N = 24k to 98k), the low end of it.
MISSION = [
    (200, 1, 0.1, 120),
    (200, 20, 0.3, 400),
    (200, 100, 0.6, 600),
    (500, 20, 0.4, 320),
    (500, 100, 0.3, 500),
    (1500, 50, 0.4, 260),
]
# The first cut's grid: 13-40 images per folder on average (a tail folder holds 2-5), far
# below the mission's sizes; kept because it shows how the methods behave when data is scarce.
SMALL = [
    (200, 1, 0.1, 40),
    (200, 20, 0.3, 100),
    (200, 100, 0.6, 100),
    (500, 20, 0.4, 40),
    (500, 100, 0.3, 60),
    (1500, 50, 0.4, 20),
]
QUICK = [(100, 20, 0.3, 60), (100, 100, 0.4, 60)]
# Issue 18's 30-40% noise settings of MISSION at reduced folder sizes (half, half, a quarter,
# a sixth: N = 12.7k-25k), so both priors x both variants fit a session on 2 shared cores.
REDUCED = [(200, 20, 0.3, 200), (500, 20, 0.4, 160), (500, 100, 0.3, 125), (1500, 50, 0.4, 40)]
GRIDS = {"mission": MISSION, "small": SMALL, "quick": QUICK, "reduced": REDUCED}
VARIANTS = {"plain": None, "realistic": Realism()}

PLAIN_CE = ProbeConfig(logit_adjust=0.0)


def _top1(logits: np.ndarray, data) -> float:
    return float((logits.argmax(1) == data.test_labels).mean())


def _detection(flagged: np.ndarray, is_noisy: np.ndarray) -> dict:
    hits = int((flagged & is_noisy).sum())
    return {"precision": hits / max(int(flagged.sum()), 1),
            "recall": hits / max(int(is_noisy.sum()), 1)}  # fmt: skip


class _Trainer:
    """`heads.trainer.fit` (k = 0, CPU) on the in-memory set: top-1 and a screening train_fn."""

    def __init__(self, data, loss: str = "ce"):
        classes = [f"{c:04d}" for c in range(data.num_classes)]
        self.data = data
        self.train = FeatureStore.from_arrays(embed=data.embed, labels=data.labels, classes=classes)
        self.test = FeatureStore.from_arrays(
            embed=data.test_embed, labels=data.test_labels, classes=classes
        )
        self.cfg = TrainConfig(device="cpu", loss=loss)

    def fit(self, targets=None, weights=None, indices=None, loss: str | None = None):
        cfg = replace(self.cfg, loss=loss) if loss else self.cfg
        return heads.trainer.fit(self.train, cfg, targets, weights, indices=indices)

    def top1(self, targets=None, weights=None, loss: str | None = None) -> float:
        model = self.fit(targets, weights, loss=loss)
        return _top1(model.predict_logits(self.test), self.data)

    def train_fn(self, train_idx, targets, weights):
        model = self.fit(targets, weights, indices=train_idx)
        return lambda idx: model.predict_logits(self.train, idx)


def _probe_top1(data, rows, targets, weights) -> float:
    """Top-1 of a plain-CE probe trained on `rows`."""
    probe = train_probe(data.embed[rows], targets[rows], weights[rows], cfg=PLAIN_CE)
    return _top1(probe.predict_logits(data.test_embed), data)


def _cleanlab_issues(data, train_fn, hard, ones, seed: int) -> np.ndarray:
    """cleanlab's `find_label_issues` on 5-fold out-of-fold probabilities of `train_fn`."""
    from cleanlab.filter import find_label_issues  # deferred: a dev-only baseline dependency

    logits = cross_fit_logits(train_fn, data.labels, hard, ones, folds=5, seed=seed)
    return find_label_issues(data.labels, softmax(logits))


def _baselines(data, trainer: _Trainer, seed: int) -> dict:
    """CE and cleanlab + CE, with the plain probe (the issue's) and with the engine's trainer."""
    y, k = data.labels, data.num_classes
    hard, ones = one_hot(y, k), np.ones(len(y), np.float32)  # (N, K) built once: 0.6 GB at 1500
    plain = _cleanlab_issues(data, probe_train_fn(data.embed, PLAIN_CE), hard, ones, seed)
    strong = _cleanlab_issues(data, trainer.train_fn, hard, ones, seed)
    return {
        "CE (probe)": {"top1": _probe_top1(data, np.arange(len(y)), hard, ones)},
        "cleanlab + CE (probe)": {
            "top1": _probe_top1(data, np.flatnonzero(~plain), hard, ones),
            **_detection(plain, data.is_noisy),
        },
        "CE (engine trainer)": {"top1": trainer.top1(hard, ones)},
        "cleanlab + CE (trainer)": {
            "top1": trainer.top1(hard, (~strong).astype(np.float32)),
            **_detection(strong, data.is_noisy),
        },
    }


def last_round_signals(result, inputs, cfg: ScreenConfig) -> dict:
    """The last round's (N, K) distributions by evidence name, as the folder-mixture extra
    sees them: the frozen ones recomputed, the cross-fitted student's ("model") recovered
    from the consensus (the mean of the student's and the frozen ones, heads.screen.rounds)."""
    frozen = {name: e.probs for name, e in frozen_evidence(inputs, cfg).items()
              if e.probs is not None}  # fmt: skip
    probs = result.consensus.astype(np.float64) * (1 + len(frozen)) - sum(frozen.values())
    probs = np.clip(probs, 0, None)
    return {"model": probs / np.maximum(probs.sum(1, keepdims=True), 1e-12), **frozen}


def _engine(data, trainer: _Trainer, cfg: ScreenConfig) -> dict:
    """`engine train` without and with `--rounds`: the trainer is student and final model;
    screening without the folder-mixture stage, then the same result relabeled by it."""
    start = time.perf_counter()
    inputs = ScreenInputs(data.embed, data.labels, data.num_classes, data.text_embed)
    res = run_screening(inputs, replace(cfg, mixture=None), trainer.train_fn)
    seconds = time.perf_counter() - start
    mix = cfg.mixture or FolderMixtureConfig()  # the "after" row even where screening's is off
    stage = mix.for_screening(cfg.seed, cfg.device)
    mixed = relabel(res, inputs, stage, last_round_signals(res, inputs, cfg))
    flipped = (data.noise_kind == 1) | (data.noise_kind == 2)
    moved = mixed.mixture_class != data.labels
    return {
        "engine train alone": {"top1": trainer.top1(loss="gce")},
        "engine + screening": {
            "top1": trainer.top1(res.targets, res.weights),
            **_detection(res.state >= RELABELED, data.is_noisy),
            "screen_s": seconds,
        },
        "engine + folder mixture": {
            "top1": trainer.top1(mixed.targets, mixed.weights),
            **_detection(moved | (mixed.weights < 0.5), data.is_noisy),
            "named": float((mixed.mixture_class == data.true_labels)[flipped].mean()),
            "mixture_s": time.perf_counter() - start - seconds,
        },
    }


def _oracles(data, trainer: _Trainer) -> dict:
    """Two upper bounds: perfect screening (every noisy sample dropped, the rest kept with
    their given labels) and the true labels (noisy samples back in their true class)."""
    inset = data.true_labels >= 0
    true_targets = one_hot(np.where(inset, data.true_labels, 0), data.num_classes)
    return {
        "perfect screening": {"top1": trainer.top1(weights=(~data.is_noisy).astype(np.float32))},
        "oracle (clean labels)": {"top1": trainer.top1(true_targets, inset.astype(np.float32))},
    }


def run_setting(classes: int, imbalance: float, noise: float, max_per_class: int = 100, *,
                seed: int = 0, cfg: ScreenConfig | None = None, flip_prior: str = "uniform",
                variant: str = "plain", baselines: bool = True) -> list[dict]:  # fmt: skip
    """All methods on one generated set; one dict per method."""
    cfg = cfg or ScreenConfig(seed=seed)
    data = make_noisy_features(num_classes=classes, imbalance=imbalance, noise=noise,
                               max_per_class=max_per_class, flip_prior=flip_prior,
                               realism=VARIANTS[variant], seed=seed)  # fmt: skip
    trainer = _Trainer(data)
    results = {**(_baselines(data, trainer, seed) if baselines else {}),
               **_engine(data, trainer, cfg), **_oracles(data, trainer)}  # fmt: skip
    base = {"classes": classes, "imbalance": imbalance, "noise": noise, "N": len(data.labels),
            "flip_prior": flip_prior, "variant": variant}  # fmt: skip
    return [{**base, "method": m, **r} for m, r in results.items()]


def run(settings=None, seed: int = 0, cfg: ScreenConfig | None = None,
        flip_prior: str = "uniform", on_setting=None, variants=tuple(VARIANTS),
        baselines: bool = True) -> list[dict]:  # fmt: skip
    """Rows for every setting (default: MISSION), variant and method; `on_setting(rows)` after
    each setting."""
    rows = []
    for setting, variant in tqdm([(s, v) for s in settings or MISSION for v in variants]):
        new = run_setting(*setting, seed=seed, cfg=cfg and replace(cfg), flip_prior=flip_prior,
                          variant=variant, baselines=baselines)  # fmt: skip
        if on_setting is not None:  # a long grid shows each setting as soon as it is done
            on_setting(new)
        rows += new
    return rows


HEADER = (f"{'variant':<9} {'K':>5} {'imb':>4} {'noise':>5} {'N':>6}  {'method':<24} "
          f"{'top1':>6} {'prec':>6} {'rec':>6} {'named':>6}")  # fmt: skip


def format_rows(rows: list[dict], header: bool = True) -> str:
    lines = [HEADER, "-" * len(HEADER)] if header else []
    for r in rows:
        pr = "".join(
            f" {100 * r[c]:6.1f}" if c in r else f" {'':>6}"
            for c in ("precision", "recall", "named")
        )
        lines.append(f"{r.get('variant', 'plain'):<9} {r['classes']:>5} {r['imbalance']:>4} {r['noise']:>5.0%} {r['N']:>6}  "
                     f"{r['method']:<24} {100 * r['top1']:6.1f}{pr}")  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="mission",
                        help="settings to run (default: mission sizes)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="same as --grid quick")
    parser.add_argument("--flip-prior", choices=FLIP_PRIORS, default="uniform",
                        help="true class of a flipped image: uniform, or by folder size")  # fmt: skip
    parser.add_argument("--variant", choices=[*VARIANTS, "both"], default="both",
                        help="simulator: plain, realistic (bench.synthetic.Realism) or both")  # fmt: skip
    parser.add_argument("--no-baselines", action="store_true",
                        help="skip the CE and cleanlab rows (the engine's and the bounds only)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a ScreenConfig field, e.g. --set soft_relabel=False")  # fmt: skip
    parser.add_argument("--extra", action="append", default=[], choices=extras.available(),
                        help="switch a screening extra on (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    overrides = {k: ast.literal_eval(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    cfg = ScreenConfig(seed=args.seed, **{"extras": tuple(args.extra), **overrides})
    grid = GRIDS["quick" if args.quick else args.grid]
    print(format_rows([]), flush=True)  # the benchmark's output is its table, setting by setting
    variants = tuple(VARIANTS) if args.variant == "both" else (args.variant,)
    run(grid, seed=args.seed, cfg=cfg, flip_prior=args.flip_prior, variants=variants,
        baselines=not args.no_baselines,
        on_setting=lambda rows: print(format_rows(rows, header=False), flush=True))  # fmt: skip


if __name__ == "__main__":
    main()
