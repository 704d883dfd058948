"""Cost of the folder-mixture stage (`heads.screen.folder_mixture`) at a size this machine
cannot run end to end: the start measured at full size, one E-step pass over a row sample,
the rest extrapolated (bench/NOISY.md, "Cost").

    python -m bench.mixture_speed                       # 300k x 1500 x 512, passes on 32,768 rows
    python -m bench.mixture_speed --classes 50 --per-class 40 --rows 1000   # seconds (the test)

Input: `--classes` classes of `--per-class` samples, each class 4 sub-types (so the start
chooses sub-means and the passes pay the widest layout), 70% of the samples screening's clean
seeds. Printed: the start (seed means, covariance, support, k-means sub-means), one pass over
`--rows` rows and one M-step at full K, the whole EM extrapolated to N rows (16 passes, 15
M-steps, the start), and its FLOP count (4 N D K M per pass + 2 N D^2).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from heads.screen import folder_mixture as fm
from heads.screen.mixture_math import MixtureOptions, initial_state, m_step


def synthetic(classes: int, per_class: int, dim: int, seed: int = 0):
    """(N, D) centred float64 rows, (N,) labels and (N,) seed mask."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    means = rng.standard_normal((classes, dim)) * 0.25
    subtypes = rng.standard_normal((classes, 4, dim)) * 0.12
    sub = rng.integers(0, 4, len(labels))
    x = means[labels] + subtypes[labels, sub] + rng.standard_normal((len(labels), dim)) * 0.1
    return x - x.mean(0), labels, rng.random(len(labels)) < 0.7


def measure(classes: int, per_class: int, rows: int, dim: int = 512) -> dict:
    opts = MixtureOptions()
    x, labels, seeds = synthetic(classes, per_class, dim)
    n = len(labels)
    start = time.perf_counter()
    state = initial_state(x, labels, classes, seeds, None, opts)
    start_s = time.perf_counter() - start
    rows = min(rows, n)
    cpu = torch.device("cpu")
    b = np.full(rows, 0.02)
    args = (torch.as_tensor(x[:rows], dtype=torch.float32), torch.as_tensor(labels[:rows]),
            torch.as_tensor(np.log(b), dtype=torch.float32),
            torch.as_tensor(np.log1p(-b), dtype=torch.float32))  # fmt: skip
    params = fm._torch_params(state, cpu)
    start = time.perf_counter()
    stats = fm._torch_pass(*args, None, params, opts, classes, keep=False)
    pass_s = time.perf_counter() - start
    start = time.perf_counter()
    m_step(state, stats, opts)
    m_step_s = time.perf_counter() - start
    width = state.mode_logw.shape[1]
    passes = opts.iters + 1
    total = passes * pass_s * n / rows + opts.iters * m_step_s + start_s
    flop = passes * (4 * n * dim * classes * width + 2 * n * dim * dim)
    return {"N": n, "K": classes, "M": width, "start_s": start_s, "rows": rows,
            "pass_s": pass_s, "m_step_s": m_step_s, "total_s": total, "tflop": flop / 1e12,
            "threads": torch.get_num_threads()}  # fmt: skip


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=1500)
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--rows", type=int, default=32768, help="rows of the timed E-step pass")
    r = measure(**vars(ap.parse_args(argv)))
    print(f"N={r['N']} K={r['K']} sub-mean slots M={r['M']} (torch threads {r['threads']}): "
          f"start {r['start_s']:.1f} s; one pass over {r['rows']} rows {r['pass_s']:.2f} s; "
          f"M-step {r['m_step_s']:.2f} s; whole EM extrapolated {r['total_s']:.0f} s "
          f"({r['total_s'] / 60:.1f} min); {r['tflop']:.1f} TFLOP")  # fmt: skip


if __name__ == "__main__":
    main()
