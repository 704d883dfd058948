"""Speed of one screening round (`heads.screen`) next to cleanlab on the same features.

    python -m bench.screen_speed --classes 200 --max-per-class 100
    python -m bench.screen_speed --classes 1500 --max-per-class 200 --imbalance 1 \
        --device cuda --no-baseline --repeats 1        # issue 5's target: 300k x 1500, <= 30 s
    python -m bench.screen_speed --classes 1500 --partition-only 300000   # its CPU side alone

Input: `bench.synthetic.make_noisy_features` (CLIP-like unit vectors, 512 wide, long tail,
40% noise). Engine: `run_screening` with `rounds=0`, i.e. round 0: kNN votes, trimmed
prototypes, zero-shot agreement and the 5-fold out-of-fold probe, then the partition.
Baseline: what a user would run with cleanlab: out-of-fold probabilities from the same
5-fold probe, then `cleanlab.filter.find_label_issues`; without cleanlab installed, the bare
5-fold probe (plain cross-entropy, no screening). Rates are samples per second.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from bench.common import rate, time_call
from bench.synthetic import make_noisy_features
from heads.screen import ScreenConfig, ScreenInputs, run_screening
from heads.screen.evidence import Evidence
from heads.screen.probe import cross_fit_logits, one_hot, probe_train_fn
from heads.screen.rounds import screen_round
from heads.screen.signals import softmax

log = logging.getLogger(__name__)


def _inputs(num_classes: int, max_per_class: int, dim: int, seed: int, imbalance: float):
    data = make_noisy_features(num_classes=num_classes, dim=dim, max_per_class=max_per_class,
                               imbalance=imbalance, noise=0.4, seed=seed)  # fmt: skip
    return ScreenInputs(
        data.embed, data.labels, num_classes=num_classes, text_embed=data.text_embed
    )


def _baseline(inputs, device: str):
    """(name, fn): 5-fold probe probabilities + cleanlab, or the probe alone."""

    try:
        from cleanlab.filter import find_label_issues  # deferred: optional, ImportError-guarded
    except ImportError:  # cleanlab is a dev dependency: fall back to the plain probe
        find_label_issues = None
    y, k = inputs.labels, inputs.num_classes
    train_fn = probe_train_fn(inputs.embed, ScreenConfig().probe, device=device)

    def fn():
        logits = cross_fit_logits(
            train_fn, y, one_hot(y, k), np.ones(len(y), np.float32), folds=5, seed=0
        )
        if find_label_issues is not None:
            z = logits - logits.max(axis=1, keepdims=True)
            probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)  # (N, K)
            find_label_issues(y, probs)

    name = "5-fold probe + cleanlab" if find_label_issues else "5-fold probe, plain CE"
    return name, fn


def run(
    num_classes: int = 100,
    max_per_class: int = 40,
    dim: int = 512,
    repeats: int = 3,
    seed: int = 0,
    *,
    imbalance: float = 10.0,
    device: str = "auto",
    baseline: bool = True,
) -> list[dict]:
    """One row: screening round 0 samples/s and seconds, and the baseline's, on the same
    features (`baseline=False` skips cleanlab, which is CPU-bound at 300k x 1500)."""

    inputs = _inputs(num_classes, max_per_class, dim, seed, imbalance)
    n = len(inputs.labels)
    cfg = ScreenConfig(rounds=0, device=device)
    engine_s = time_call(lambda: run_screening(inputs, cfg), repeats=repeats)
    base_name, base_s = "none", 0.0
    if baseline:
        base_name, base_fn = _baseline(inputs, device)
        base_s = time_call(base_fn, repeats=repeats)
    return [
        {
            "backend": "heads.screen round 0",
            "samples": n,
            "classes": num_classes,
            "device": device,
            "seconds": engine_s,
            "samples_per_s": rate(n, engine_s),
            "baseline": base_name,
            "baseline_samples_per_s": rate(n, base_s),
        }
    ]


def random_round_inputs(samples: int, num_classes: int, seed: int = 0):
    """(inputs, fixed evidence, model logits) of one screening round on random (N, K) signals
    whose top class is usually the given label, as with real signals."""

    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, samples)

    def logits():
        z = rng.standard_normal((samples, num_classes), dtype=np.float32) * 3
        z[np.arange(samples), y] += 4
        return z

    votes, zero_shot = softmax(logits()), softmax(logits())
    given = np.arange(samples), y
    fixed = {
        "knn": Evidence(votes[given], votes, votes.argmax(1)),
        "prototype": Evidence(rng.standard_normal(samples).astype(np.float32),
                              voter=rng.integers(0, num_classes, samples)),
        "zero_shot": Evidence(zero_shot[given], zero_shot),
    }  # fmt: skip
    inputs = ScreenInputs(np.zeros((samples, 1), np.float32), y, num_classes)
    return inputs, fixed, logits()


def partition_seconds(samples: int, num_classes: int, seed: int = 0) -> float:
    """Seconds of one partition (`rounds.screen_round`: mixtures, consensus, partition,
    targets) on `random_round_inputs`: the CPU side of a round, which no device runs for it."""

    inputs, fixed, model_logits = random_round_inputs(samples, num_classes, seed)

    def one_partition():
        screen_round(inputs, ScreenConfig(), fixed, model_logits)

    return time_call(one_partition, repeats=1, warmup=0)  # NumPy: nothing to warm up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--max-per-class", type=int, default=40)
    parser.add_argument("--imbalance", type=float, default=10.0,
                        help="largest / smallest folder (1: every class max-per-class)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    parser.add_argument("--no-baseline", action="store_true", help="skip cleanlab")
    parser.add_argument("--partition-only", type=int, metavar="N",
                        help="time only the CPU side of a round on N random samples x --classes")  # fmt: skip
    args = parser.parse_args()
    if args.partition_only:
        secs = partition_seconds(args.partition_only, args.classes)
        print({"backend": "partition (CPU side)", "samples": args.partition_only,
               "classes": args.classes, "seconds": secs})  # fmt: skip
        return
    rows = run(args.classes, args.max_per_class, repeats=args.repeats,
               imbalance=args.imbalance, device=args.device, baseline=not args.no_baseline)  # fmt: skip
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
