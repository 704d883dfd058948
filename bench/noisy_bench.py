"""Noisy-label benchmark: the engine's screening next to cross-entropy, cleanlab and an oracle.

    python -m bench.noisy_bench            # the full grid (~15 min on 2 CPU cores)
    python -m bench.noisy_bench --quick    # two small settings (~1 min)

Data: `heads.synthetic` CLIP-like features (see its docstring for how hard they are). Every
row is scored by top-1 on the clean, balanced test set; noise-detection precision / recall
(flagged = relabeled, dropped or out-of-set) are given for cleanlab and for screening.
Rows: CE on the noisy labels (the screening probe, no logit adjustment); cleanlab
`find_label_issues` on 5-fold pred_probs of that probe, then CE on what it keeps; engine
training alone (`heads.trainer.fit`, its defaults: cosine head, GCE, logit adjustment, no
screening); engine with screening (rounds with the probe as train_fn, then the probe on the
screened soft targets and weights); the same targets trained by `heads.trainer.fit` with CE;
and the clean-label oracle (true labels, out-of-set samples removed, the probe).
"""

from __future__ import annotations

import argparse
import ast
import logging
import time
from dataclasses import replace

import numpy as np
from tqdm import tqdm

from heads.screen import ScreenConfig, ScreenInputs, run_screening
from heads.screen.calibrate import calibration_subset
from heads.screen.partition import RELABELED
from heads.screen.probe import ProbeConfig, cross_fit_logits, one_hot, probe_train_fn, train_probe
from heads.screen.signals import softmax
from heads.synthetic import make_noisy_features

log = logging.getLogger(__name__)

# (classes, imbalance, noise, max_per_class): noise 10-60%, imbalance 1-100, 200-1500 classes.
# Bigger K get smaller folders (max_per_class) so the grid stays ~15 min on 2 CPU cores.
SETTINGS = [
    (200, 1, 0.1, 40),
    (200, 20, 0.3, 100),
    (200, 100, 0.6, 100),
    (500, 20, 0.4, 40),
    (500, 100, 0.3, 60),
    (1500, 50, 0.4, 20),
]
QUICK = [(100, 20, 0.3, 60), (100, 100, 0.4, 60)]

PLAIN_CE = ProbeConfig(logit_adjust=0.0)


def _top1(logits: np.ndarray, data) -> float:
    return float((logits.argmax(1) == data.test_labels).mean())


def _detection(flagged: np.ndarray, is_noisy: np.ndarray) -> tuple[float, float]:
    hits = int((flagged & is_noisy).sum())
    return hits / max(int(flagged.sum()), 1), hits / max(int(is_noisy.sum()), 1)


def _probe_top1(data, rows, targets, weights, cfg: ProbeConfig) -> float:
    probe = train_probe(data.embed[rows], targets[rows], weights[rows], cfg=cfg)
    return _top1(probe.predict_logits(data.test_embed), data)


def _trainer_top1(data, k: int, targets=None, weights=None, loss: str = "gce") -> float:
    """`heads.trainer.fit` (the engine's trainer, k = 0) on in-memory arrays, on the CPU."""
    from heads.config import TrainConfig
    from heads.data import FeatureData
    from heads.trainer import fit

    classes = [f"{c:04d}" for c in range(k)]
    train = FeatureData(embed=data.embed, labels=data.labels, classes=classes)
    test = FeatureData(embed=data.test_embed, labels=data.test_labels, classes=classes)
    model = fit(train, TrainConfig(device="cpu", loss=loss), targets, weights)
    return _top1(model.predict_logits(test), data)


def _cleanlab(data, k: int, seed: int) -> dict:
    from cleanlab.filter import find_label_issues

    y = data.labels
    hard, ones = one_hot(y, k), np.ones(len(y), np.float32)
    logits = cross_fit_logits(
        probe_train_fn(data.embed, PLAIN_CE), y, hard, ones, folds=5, seed=seed
    )
    issues = find_label_issues(y, softmax(logits))
    precision, recall = _detection(issues, data.is_noisy)
    top1 = _probe_top1(data, np.flatnonzero(~issues), hard, ones, PLAIN_CE)
    return {"top1": top1, "precision": precision, "recall": recall}


def _engine_screen(data, k: int, cfg: ScreenConfig) -> tuple[dict, dict]:
    start = time.perf_counter()
    res = run_screening(ScreenInputs(data.embed, data.labels, k, data.text_embed), cfg)
    seconds = time.perf_counter() - start
    rows = np.flatnonzero(res.weights > 0)
    if cfg.dfr_calibration:  # the option measured in NOISY.md: a balanced, trusted subset
        rows = calibration_subset(res.state, res.p_clean, data.labels, num_classes=k)
    precision, recall = _detection(res.state >= RELABELED, data.is_noisy)
    probe = {"top1": _probe_top1(data, rows, res.targets, res.weights, cfg.probe),
             "precision": precision, "recall": recall, "screen_s": seconds}  # fmt: skip
    weights = np.zeros_like(res.weights)
    weights[rows] = res.weights[rows]
    fitted = {"top1": _trainer_top1(data, k, res.targets, weights, loss="ce")}
    return probe, fitted


def run_setting(classes: int, imbalance: float, noise: float, max_per_class: int = 100, *,
                seed: int = 0, cfg: ScreenConfig | None = None) -> list[dict]:  # fmt: skip
    """All methods on one generated set; one dict per method."""
    cfg = cfg or ScreenConfig(seed=seed)
    data = make_noisy_features(num_classes=classes, imbalance=imbalance, noise=noise,
                               max_per_class=max_per_class, seed=seed)  # fmt: skip
    k, y = classes, data.labels
    ones = np.ones(len(y), np.float32)
    base = {"classes": classes, "imbalance": imbalance, "noise": noise, "N": len(y)}
    ce = _probe_top1(data, np.arange(len(y)), one_hot(y, k), ones, PLAIN_CE)
    inset = np.flatnonzero(data.true_labels >= 0)
    oracle = _probe_top1(data, inset, one_hot(data.true_labels, k), ones, cfg.probe)
    screened, screened_fit = _engine_screen(data, k, cfg)
    results = {
        "CE (noisy labels)": {"top1": ce},
        "cleanlab + CE": _cleanlab(data, k, seed),
        "engine train alone": {"top1": _trainer_top1(data, k)},
        "engine + screening": screened,
        "  same, trainer.fit": screened_fit,
        "oracle (clean labels)": {"top1": oracle},
    }
    return [{**base, "method": m, **r} for m, r in results.items()]


def run(settings=None, seed: int = 0, cfg: ScreenConfig | None = None) -> list[dict]:
    """Rows for every setting (default: SETTINGS) and method."""
    rows = []
    for setting in tqdm(settings or SETTINGS, desc="settings"):
        rows += run_setting(*setting, seed=seed, cfg=cfg and replace(cfg))
    return rows


def format_rows(rows: list[dict]) -> str:
    head = f"{'K':>5} {'imb':>4} {'noise':>5} {'N':>6}  {'method':<22} {'top1':>6} {'prec':>6} {'rec':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        pr = "".join(
            f" {100 * r[c]:6.1f}" if c in r else f" {'':>6}" for c in ("precision", "recall")
        )
        lines.append(f"{r['classes']:>5} {r['imbalance']:>4} {r['noise']:>5.0%} {r['N']:>6}  "
                     f"{r['method']:<22} {100 * r['top1']:6.1f}{pr}")  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small settings only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a ScreenConfig field, e.g. --set soft_relabel=False")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    overrides = {k: ast.literal_eval(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    cfg = ScreenConfig(seed=args.seed, **overrides)
    rows = run(QUICK if args.quick else SETTINGS, seed=args.seed, cfg=cfg)
    print(format_rows(rows))  # the benchmark's output is its table


if __name__ == "__main__":
    main()
