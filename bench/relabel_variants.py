"""Variants of the folder-mixture stage on cached screening results (bench/NOISY.md,
"Gated by the neighbours' votes").

    python -m bench.relabel_variants \\
        --cells realistic-size-200-20-30-200 plain-uniform-500-20-40-160 \\
        --variants gauss:none gauss:agree poe4:agree-all > out.jsonl
    python -m bench.relabel_variants --table out.jsonl      # the markdown table of NOISY.md
    python -m bench.relabel_variants --summary out.jsonl     # per-cell summary (reads the cache)
    python -m bench.relabel_variants --compare out.jsonl     # each variant against gauss:none

A cell is VARIANT-PRIOR-K-IMB-NOISE%-MAX_PER_CLASS (the reduced grid of `bench.noisy_bench`,
seed 0). Its screening (`ScreenConfig(seed=0, mixture=None)`, the engine trainer as student: the bench's
"engine + screening" row) runs once and is cached as CACHE/CELL.pkl (row: before, perfect,
oracle; result: the ScreenResult). A variant is LIKELIHOOD:GATE:
  LIKELIHOOD  gauss (shared-covariance Gaussian), poeT (Gaussian^(1/T) x the cross-fitted
              student's probabilities), student (the student's probabilities alone)
  GATE        none (every sample learns the EM's responsibilities), flagged (only samples
              screening did not keep as clean), agree (only samples
              screening did not keep as clean, and only where the EM's class is the
              student's class; others keep screening's targets), agree-all (agree, plus clean
              samples where the EM and the student agree on another class than the folder),
              sk / sk-all (as agree / agree-all, and the kNN votes must agree too),
              k-all (as agree-all with the kNN votes in place of the student)
LIKELIHOOD may end in +KEY=VALUE settings of `MixtureOptions` (gauss+modes=1: one mean per
class, the first version). One JSON line per (cell, variant): top-1 before/after, oracle, perfect screening, detection
precision/recall (flagged = final class differs from the folder, or weight < 0.5) and the
share of flipped samples whose final class is their true class.
"""

from __future__ import annotations

import argparse
import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.noisy_bench import _detection, _Trainer, last_round_signals
from bench.synthetic import Realism, make_noisy_features
from heads.screen import ScreenConfig, ScreenInputs, run_screening
from heads.screen.folder_mixture import MixtureOptions
from heads.screen.partition import RELABELED
from heads.screen.probe import one_hot
from heads.screen.relabel import FolderMixtureConfig, relabel


def load_cell(key: str, cache: Path):
    """(data, inputs, trainer, screening result, row) of a cell; screening cached."""
    variant, prior, k, imb, noise, mpc = key.split("-")
    data = make_noisy_features(num_classes=int(k), imbalance=int(imb), noise=int(noise) / 100,
                               max_per_class=int(mpc), flip_prior=prior, seed=0,
                               realism=Realism() if variant == "realistic" else None)  # fmt: skip
    inputs = ScreenInputs(data.embed, data.labels, data.num_classes, data.text_embed)
    trainer = _Trainer(data)
    path = cache / f"{key}.pkl"
    if not path.exists():
        # Screening without the stage: the "before" every variant relabels.
        result = run_screening(inputs, ScreenConfig(seed=0, mixture=None), trainer.train_fn)
        inset = data.true_labels >= 0
        row = dict(key=key, N=len(data.labels), before=trainer.top1(result.targets, result.weights),
                   perfect=trainer.top1(weights=(~data.is_noisy).astype(np.float32)),
                   oracle=trainer.top1(one_hot(np.where(inset, data.true_labels, 0), data.num_classes),
                                       inset.astype(np.float32)),
                   **_detection(result.state >= RELABELED, data.is_noisy))  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps({"row": row, "result": result}))
    cached = pickle.loads(path.read_bytes())
    return data, inputs, trainer, cached["result"], cached["row"]


GATE_SPECS = {
    "none": ("all", "off"),
    "off": ("all", "off"),
    "flagged": ("flagged", "off"),
    "agree": ("flagged", "student"),
    "agree-all": ("all", "student"),
    "sk": ("flagged", "student+knn"),
    "sk-all": ("all", "student+knn"),
    "k-all": ("all", "knn"),
}


def stage_config(likelihood: str, gate: str) -> FolderMixtureConfig:
    likelihood, *sets = likelihood.split("+")
    opts = MixtureOptions(**{k: type(getattr(MixtureOptions, k))(v)
                             for k, v in (s.split("=") for s in sets)})  # fmt: skip
    if likelihood == "gauss":
        disc = False
    elif likelihood == "student":
        opts, disc = replace(opts, gaussian_temperature=1e6), True
    else:  # poeT
        opts, disc = replace(opts, gaussian_temperature=float(likelihood[3:])), True
    rows, gate_name = GATE_SPECS[gate]
    return FolderMixtureConfig(device="cpu", rows=rows, gate=gate_name, use_student=disc,
                               options=opts)  # fmt: skip


def run_variant(spec, data, inputs, trainer, result, row, signals) -> dict:
    likelihood, gate = spec.split(":")
    out = relabel(result, inputs, stage_config(likelihood, gate), signals)
    final = out.targets.argmax(1)
    flagged = (final != data.labels) | (out.weights < 0.5)
    flip = (data.noise_kind == 1) | (data.noise_kind == 2)
    after = trainer.top1(out.targets, out.weights)
    gap = max(row["oracle"] - row["before"], 1e-9)
    return dict(cell=row["key"], variant=spec, before=row["before"], after=after,
                delta=after - row["before"], closed=(after - row["before"]) / gap,
                perfect=row["perfect"], oracle=row["oracle"], **_detection(flagged, data.is_noisy),
                named=float((final == data.true_labels)[flip].mean()))  # fmt: skip


def variant_rows(paths) -> list[dict]:
    """The variant lines of this script's outputs (screening's `--before` lines and anything
    else left out)."""
    return [json.loads(line) for p in paths for line in Path(p).read_text().splitlines()
            if line.startswith("{") and '"variant"' in line]  # fmt: skip


def table(paths) -> str:
    """Markdown table (cell x variant) of the JSON lines in `paths` (this script's output)."""
    rows = variant_rows(paths)
    out = ["| cell | variant | before | after | delta (pts) | gap closed | P/R | named |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in sorted(rows, key=lambda r: (r["cell"], r["variant"])):
        out.append(f"| {r['cell']} | {r['variant']} | {100 * r['before']:.2f} | "
                   f"{100 * r['after']:.2f} | {100 * r['delta']:+.2f} | {100 * r['closed']:.0f}% | "
                   f"{100 * r['precision']:.0f}/{100 * r['recall']:.0f} | "
                   f"{100 * r['named']:.0f}% |")  # fmt: skip
    return "\n".join(out)


def summary(paths, cache: Path, variants=("gauss:none", "gauss:sk-all", "gauss:k-all")) -> str:
    """Per cell: screening's row (cached), each variant's top-1 and the last one's P/R, named
    share and gap closed; then each variant's mean and worst change over the cells."""
    by: dict = {}
    for r in variant_rows(paths):
        by.setdefault(r["cell"], {})[r["variant"]] = r
    cells = [c for c in by if all(v in by[c] for v in variants)]
    last = variants[-1]
    out = [f"| cell | before (P/R) | perfect | oracle | {' | '.join(variants)} | "
           f"{last} P/R | named | gap closed |", "|---" * (7 + len(variants)) + "|"]  # fmt: skip
    for c in cells:
        row = pickle.loads((cache / f"{c}.pkl").read_bytes())["row"]
        k = by[c][last]
        tops = " | ".join(f"{100 * by[c][v]['after']:.2f} ({100 * by[c][v]['delta']:+.2f})"
                          for v in variants)  # fmt: skip
        out.append(f"| {c} | {100 * row['before']:.2f} ({100 * row['precision']:.0f}/"
                   f"{100 * row['recall']:.0f}) | {100 * row['perfect']:.2f} | "
                   f"{100 * row['oracle']:.2f} | {tops} | {100 * k['precision']:.0f}/"
                   f"{100 * k['recall']:.0f} | {100 * k['named']:.0f}% | "
                   f"{100 * k['closed']:.0f}% |")  # fmt: skip
    for v in variants:
        d = [by[c][v]["delta"] for c in cells]
        gap = sum(by[c][v]["oracle"] - by[c][v]["before"] for c in cells)
        closed = [by[c][v]["closed"] for c in cells]
        out.append(f"\n{v}: mean {100 * np.mean(d):+.2f} pts, worst {100 * min(d):+.2f}, "
                   f"gap closed {100 * np.mean(closed):.0f}% (mean of cells), "
                   f"{100 * sum(d) / gap:.0f}% (pooled), over {len(cells)} cells")  # fmt: skip
    return "\n".join(out)


def compare(paths, default: str) -> str:
    """Every other variant against `default` on the cells both ran: the mean and the worst
    change of top-1 (the other minus the default), the cells where the default is more than
    0.3 below it, and the mean gap closed of each (how NOISY.md decides each piece)."""
    by: dict = {}
    for r in variant_rows(paths):
        by.setdefault(r["variant"], {})[r["cell"]] = r
    out = [f"| variant | cells | mean vs {default} | worst | {default} loses > 0.3 in | "
           f"gap closed (variant / {default}) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for v in sorted(set(by) - {default}):
        cells = [c for c in by[v] if c in by.get(default, {})]
        if not cells:
            continue
        d = [100 * (by[v][c]["after"] - by[default][c]["after"]) for c in cells]
        loses = sum(x > 0.3 for x in d)
        closed = [np.mean([by[name][c]["closed"] for c in cells]) for name in (v, default)]
        out.append(f"| {v} | {len(cells)} | {np.mean(d):+.2f} | {min(d):+.2f} | {loses} | "
                   f"{100 * closed[0]:.0f}% / {100 * closed[1]:.0f}% |")  # fmt: skip
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=Path("work/bench-cache/relabel"))
    ap.add_argument("--cells", nargs="+", default=[])
    ap.add_argument("--table", nargs="+", type=Path, help="print the table of these outputs")
    ap.add_argument("--summary", nargs="+", type=Path, help="print the per-cell summary")
    ap.add_argument("--columns", nargs="+", default=["gauss:none", "gauss:sk-all", "gauss:k-all"],
                    help="variants the summary shows, the last one with its P/R and named share")  # fmt: skip
    ap.add_argument("--variants", nargs="+", default=["gauss:none"])
    ap.add_argument("--compare", nargs="+", type=Path,
                    help="print every variant of these outputs against --default")  # fmt: skip
    ap.add_argument(
        "--default", default="gauss:none", help="the variant --compare measures against"
    )
    ap.add_argument("--before", action="store_true", help="also print screening's own row")
    args = ap.parse_args(argv)
    if args.table:
        print(table(args.table))
    if args.summary:
        print(summary(args.summary, args.cache, tuple(args.columns)))
    if args.compare:
        print(compare(args.compare, args.default))
    for key in args.cells:
        data, inputs, trainer, result, row = load_cell(key, args.cache)
        signals = last_round_signals(result, inputs, ScreenConfig(seed=0))
        if args.before:
            final = result.targets.argmax(1)
            flagged = (final != data.labels) | (result.weights < 0.5)
            print(json.dumps(dict(row, **_detection(flagged, data.is_noisy))), flush=True)
        for spec in args.variants:
            print(json.dumps(run_variant(spec, data, inputs, trainer, result, row, signals)),
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
