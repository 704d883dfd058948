"""`engine demo`: the whole flow on generated sample data, explaining each step.

    engine demo                      # -> work/demo/ (data, shards, features, run, predictions)
    engine demo --out /tmp/demo --classes 8

Generates class folders of real images (class-specific colour, shape and texture) with a long
tail, 30% wrong labels and a few truncated/corrupt files, plus a test folder whose labels are
kept aside; then runs shard -> train (screening rounds, last blocks unfrozen) -> predict ->
eval -> a short bench, through the same commands a user types.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from engine import paths
from engine import runs as run_files
from engine.outputs import OutputKind, fresh_output_dir

# `engine demo --out X` rebuilds X only when an earlier demo made it (engine.outputs).
# Older demos left no marker file: their demo_train.json (step 3) identifies them.
DEMO_OUTPUT = OutputKind(
    "demo folder", "demo", recognise=lambda d: (d / DEMO_CONFIG).is_file() and (d / "data").is_dir()
)

# Small enough for < 3 minutes on a 2-core CPU with the real ViT-B/32, large enough for a tail.
DEMO_CLASSES = 10
DEMO_NOISE = 0.3
DEMO_EPOCHS = {"epochs_lp": 5, "epochs_ft": 1}
# The ViT stages already print their img/s in steps 3-4; the short bench adds the rest.
DEMO_BENCH_STAGES = "shard,decode,train,screen"
DEMO_CONFIG = "demo_train.json"


def _step(title: str) -> float:
    click.secho(f"\n== {title}", bold=True)
    return time.perf_counter()


def _done(start: float) -> None:
    click.echo(f"   ({time.perf_counter() - start:.1f} s)")


def _run(args: list[str]) -> None:
    """Run one engine command in-process, exactly as typed on the command line."""
    from engine.cli import main

    click.echo("$ engine " + " ".join(args))
    main.main(args, standalone_mode=False)


def resolve_weights(weights: str) -> str:
    """`auto`: the real OpenAI weights when open_clip's cache has them, else random (loudly)."""
    if weights != "auto":
        return weights
    from features.model import openai_weights_cached

    if openai_weights_cached():
        return "openai"
    click.secho(
        "NOTE: OpenAI ViT-B/32 weights are not cached on this machine, so the demo uses RANDOM "
        "weights: every step runs for real, but accuracy is near chance and every output is "
        "stamped 'random'. See README 'Getting the OpenAI weights onto an offline machine'.",
        fg="yellow",
        bold=True,
    )
    return "random"


@click.command("demo")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=paths.DEMO_OUT,
    show_default=True,
    help="Folder for everything the demo writes: new or empty, or an earlier demo's (rebuilt).",
)
@click.option("--classes", type=click.IntRange(2, 200), default=DEMO_CLASSES, show_default=True)
@click.option(
    "--weights",
    default="auto",
    show_default=True,
    help="auto (OpenAI weights when cached, else random), openai, random, or a file.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--bench/--no-bench", "with_bench", default=True, help="End with a short bench.")
def command(out: Path, classes: int, weights: str, seed: int, with_bench: bool) -> None:
    """Generate sample data and run shard -> train -> predict -> eval -> bench on it."""
    total = time.perf_counter()
    fresh_output_dir(out, DEMO_OUTPUT)  # a folder of the user's is refused, never emptied
    weights = resolve_weights(weights)
    info = _generate(out, classes, seed)
    shards = out / "shards"
    start = _step("2/6 shard: pack, repair, reject")
    _run(["shard", str(info.train_dir), "--out", str(shards / "train")])
    _run(["shard", str(info.test_dir), "--out", str(shards / "test")])
    _done(start)
    run = out / "runs" / "demo"
    _train(out, shards, run, weights, seed)
    pred = out / "pred_results.csv"
    start = _step("4/6 predict the test folder")
    _run(["predict", str(info.test_dir), "--model", str(run), "--out", str(pred)])
    _done(start)
    _evaluate(info, shards, run, pred)
    if with_bench:
        start = _step("6/6 bench (short)")
        _run(["bench", "--quick", "--stages", DEMO_BENCH_STAGES, "--out", str(out / "bench")])
        _done(start)
    click.secho(
        f"\ndemo finished in {time.perf_counter() - total:.0f} s; outputs in {out}", bold=True
    )
    click.echo(f"report: {run / run_files.REPORT}   predictions: {pred}")
    from heads.screen.suspects import mislabeled_share

    page = run / run_files.ROUNDS / run_files.SUSPECTS_PAGE
    hits, top = mislabeled_share(page.with_name(run_files.SUSPECTS_CSV), info.noisy, top=20)
    click.echo(f"suspects page: {page} (open it in a browser; {hits} of its {top} most suspicious "
               f"flagged files are truly mislabeled, per {info.root / 'train_truth.csv'})")  # fmt: skip


def _generate(out: Path, classes: int, seed: int):
    """Step 1: class folders with a long tail and wrong labels, and a test folder."""
    from shards.sample_data import make_sample_dataset

    start = _step(f"1/6 generate sample data ({classes} classes, {DEMO_NOISE:.0%} wrong labels)")
    info = make_sample_dataset(out / "data", n_classes=classes, noise=DEMO_NOISE, seed=seed)
    counts = sorted(info.train_counts.values(), reverse=True)
    click.echo(
        f"   {sum(counts)} training files (per class {counts[0]} .. {counts[-1]}), "
        f"{len(info.noisy)} with a wrong label, {len(info.odd_files)} odd or broken files, "
        f"{len(info.test_labels)} test files"
    )
    _done(start)
    return info


def _train(out: Path, shards: Path, run: Path, weights: str, seed: int) -> None:
    """Step 3: features, 2 screening rounds and the last 2 blocks, with demo-sized epochs."""
    start = _step("3/6 train: cache features, screen labels (2 rounds), train last 2 blocks")
    # Fewer epochs than the default (10 + 5) keep the demo under 3 minutes on a 2-core CPU
    # (each screening round trains two cross-fitted tails); everything else is the default.
    config = out / DEMO_CONFIG
    config.write_text(json.dumps({"train": DEMO_EPOCHS}))
    _run(["train", "--config", str(config), "--shards", str(shards / "train"),
          "--features", str(out / "features" / "train.zarr"), "--unfreeze-last", "2",
          "--rounds", "2", "--weights", weights, "--seed", str(seed), "--out", str(run)])  # fmt: skip
    _done(start)


def _evaluate(info, shards: Path, run: Path, pred: Path) -> None:
    """Step 5: score against the hidden labels (`eval --json` into the run redraws its report)."""
    start = _step("5/6 evaluate against the hidden test labels")
    _run(["eval", str(pred), str(info.root / "test_labels.csv"), "--train-counts",
          str(shards / "train" / "manifest.json"), "--json", str(run / run_files.EVAL)])  # fmt: skip
    _done(start)
