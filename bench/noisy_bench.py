"""Noisy-label benchmark: the engine's screening next to cross-entropy, cleanlab and an oracle.

    python -m bench.noisy_bench            # all settings (minutes on CPU)
    python -m bench.noisy_bench --quick    # two small settings (CI speed)

Every method trains the same head (`heads.screen.probe`, a linear softmax probe on simulated
CLIP-like embeddings from `heads.synthetic`) and is scored by top-1 on the clean, balanced
test set; noise-detection precision / recall are reported for cleanlab and for screening.
Rows: CE on the noisy labels; cleanlab `find_label_issues` (cross-validated pred_probs of the
same probe) then CE on what it keeps; engine training alone (GCE + logit adjustment, no
screening); engine with screening (rounds, soft targets, weights, logit adjustment); and the
clean-label oracle (true labels, out-of-set samples removed).
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace

import numpy as np

from heads.screen import ScreenConfig, ScreenInputs, run_screening
from heads.screen.partition import RELABELED
from heads.screen.probe import ProbeConfig, cross_fit_logits, one_hot, probe_train_fn, train_probe
from heads.screen.signals import softmax
from heads.synthetic import make_noisy_features

log = logging.getLogger(__name__)

# (classes, imbalance, noise): noise 10-60%, imbalance 1-100, 200-1500 classes.
SETTINGS = [
    (200, 1, 0.1),
    (200, 20, 0.3),
    (200, 100, 0.6),
    (500, 20, 0.2),
    (500, 100, 0.4),
    (500, 1, 0.5),
    (1500, 20, 0.4),
    (1500, 50, 0.6),
]
QUICK = [(200, 20, 0.3), (200, 100, 0.5)]
MAX_PER_CLASS = 60

PLAIN_CE = ProbeConfig(logit_adjust=0.0)
ENGINE_ALONE = ProbeConfig(loss="gce")


def _top1(probe, data) -> float:
    return float((probe.predict_logits(data.test_embed).argmax(1) == data.test_labels).mean())


def _detection(flagged: np.ndarray, is_noisy: np.ndarray) -> tuple[float, float]:
    hits = int((flagged & is_noisy).sum())
    return hits / max(int(flagged.sum()), 1), hits / max(int(is_noisy.sum()), 1)


def _fit(data, rows, targets, weights, cfg: ProbeConfig):
    return train_probe(data.embed[rows], targets[rows], weights[rows], cfg=cfg)


def _cleanlab(data, k: int, seed: int) -> dict:
    from cleanlab.filter import find_label_issues

    y = data.labels
    hard, ones = one_hot(y, k), np.ones(len(y), np.float32)
    logits = cross_fit_logits(
        probe_train_fn(data.embed, PLAIN_CE), y, hard, ones, folds=5, seed=seed
    )
    issues = find_label_issues(y, softmax(logits))
    keep = np.flatnonzero(~issues)
    precision, recall = _detection(issues, data.is_noisy)
    return {
        "top1": _top1(_fit(data, keep, hard, ones, PLAIN_CE), data),
        "precision": precision,
        "recall": recall,
    }


def _engine_alone(data, k: int) -> dict:
    """Training without screening: D's trainer when it exists would slot in here."""
    rows = np.arange(len(data.labels))
    probe = _fit(data, rows, one_hot(data.labels, k), np.ones(len(rows), np.float32), ENGINE_ALONE)
    return {"top1": _top1(probe, data)}


def _engine_screen(data, k: int, cfg: ScreenConfig) -> dict:
    start = time.perf_counter()
    res = run_screening(ScreenInputs(data.embed, data.labels, k, data.text_embed), cfg)
    seconds = time.perf_counter() - start
    rows = np.flatnonzero(res.weights > 0)
    probe = _fit(data, rows, res.targets, res.weights, cfg.probe)
    precision, recall = _detection(res.state >= RELABELED, data.is_noisy)
    return {"top1": _top1(probe, data), "precision": precision, "recall": recall,
            "screen_s": seconds, "rounds": len(res.rounds) - 1}  # fmt: skip


def run_setting(classes: int, imbalance: float, noise: float, *, seed: int = 0,
                cfg: ScreenConfig | None = None) -> list[dict]:  # fmt: skip
    """All methods on one generated set; one dict per method."""
    cfg = cfg or ScreenConfig(seed=seed)
    data = make_noisy_features(num_classes=classes, imbalance=imbalance, noise=noise,
                               max_per_class=MAX_PER_CLASS, seed=seed)  # fmt: skip
    k, y = classes, data.labels
    rows_all = np.arange(len(y))
    ones = np.ones(len(y), np.float32)
    base = {"classes": classes, "imbalance": imbalance, "noise": noise, "N": len(y)}
    ce = _top1(_fit(data, rows_all, one_hot(y, k), ones, PLAIN_CE), data)
    inset = np.flatnonzero(data.true_labels >= 0)
    oracle = _top1(_fit(data, inset, one_hot(data.true_labels, k), ones, cfg.probe), data)
    results = {
        "CE (noisy labels)": {"top1": ce},
        "cleanlab + CE": _cleanlab(data, k, seed),
        "engine train alone": _engine_alone(data, k),
        "engine + screening": _engine_screen(data, k, cfg),
        "oracle (clean labels)": {"top1": oracle},
    }
    return [{**base, "method": m, **r} for m, r in results.items()]


def run(settings=None, seed: int = 0, cfg: ScreenConfig | None = None) -> list[dict]:
    """Rows for every setting (default: SETTINGS) and method."""
    rows = []
    for classes, imbalance, noise in settings or SETTINGS:
        rows += run_setting(classes, imbalance, noise, seed=seed, cfg=cfg and replace(cfg))
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = run(QUICK if args.quick else SETTINGS, seed=args.seed)
    print(format_rows(rows))  # the benchmark's output is its table


if __name__ == "__main__":
    main()
