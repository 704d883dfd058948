"""`engine screen`: run noisy-label screening alone on a feature store and inspect it.

    engine screen --features work/features/train.zarr --rounds 2 --out work/screen --show 20

Rounds >= 1 here retrain the screening's own linear probe on the stored embeddings (k = 0,
seconds): screening alone needs no tail training. `engine train --rounds R` plugs its own
trainer into the same rounds instead.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from engine.errors import UserError

log = logging.getLogger(__name__)


def _class_names(path: Path | None, classes: list[str]) -> list[str]:
    if path is None:
        return list(classes)
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(names) != len(classes):
        raise UserError(
            f"--class-names {path} has {len(names)} names but the store has {len(classes)} "
            "classes; give one name per line, in class order"
        )
    return names


def _inputs(store, text_embed: Path | None):
    import numpy as np

    from heads.screen import ScreenInputs

    labels = np.asarray(store.labels, np.int64)
    if (labels < 0).any():
        raise UserError(f"{store.path} has unlabeled samples; screening needs a labeled split")
    text = None
    if text_embed is not None:
        text = np.load(text_embed).astype(np.float32)
        if text.shape != (len(store.classes), store.embed(slice(0, 1)).shape[1]):
            raise UserError(f"--text-embed {text_embed} has shape {text.shape}; need (K, D)")
    return ScreenInputs(store.embed().astype(np.float32), labels, len(store.classes), text)


def format_suspicious(result, paths, labels, names, count: int) -> str:
    """The `count` least trusted samples: path, given and proposed label, state and scores."""
    import numpy as np

    from heads.screen import STATES

    order = np.argsort(result.combined, kind="stable")[:count]
    signal_names = list(result.scores)
    head = ["path", "given", "proposed", "state", "trust", "p_clean", *signal_names]
    lines = ["\t".join(head)]
    for i in order:
        proposed = "-" if result.proposed[i] < 0 else names[result.proposed[i]]
        cells = [paths[i], names[labels[i]], proposed, STATES[result.state[i]],
                 f"{result.combined[i]:.3f}", f"{result.p_clean[i]:.3f}",
                 *(f"{result.scores[s][i]:.3f}" for s in signal_names)]  # fmt: skip
        lines.append("\t".join(cells))
    return "\n".join(lines)


@click.command("screen")
@click.option("--features", "store_path", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default="work/features/train.zarr", show_default=True, help="Feature store to screen.")  # fmt: skip
@click.option("--rounds", type=click.IntRange(0, 20), default=2, show_default=True,
              help="Rounds after round 0 (each retrains the probe on two cross-fitted halves).")  # fmt: skip
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default="work/screen", show_default=True, help="Folder for rounds and summary.json.")  # fmt: skip
@click.option(
    "--show", type=click.IntRange(0), default=0, help="List the N most suspicious samples."
)
@click.option("--class-names", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="One display name per class, in class order.")  # fmt: skip
@click.option("--text-embed", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="(K, D) .npy of class text embeddings for the zero-shot signal.")  # fmt: skip
@click.option("--suspects", type=click.IntRange(0), default=200, show_default=True,
              help="Cards on the suspects.html page written into --out.")  # fmt: skip
@click.option("--shards", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Shards to read the page's thumbnails from (default: the store's).")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="Where kNN and the probe run (auto: CUDA when present).")  # fmt: skip
def command(store_path, rounds, out_dir, show, class_names, text_embed, suspects, shards, seed,
            device):  # fmt: skip
    """Find, relabel and down-weight noisy samples; save every round; show the worst."""
    from features.store import open_store
    from heads.screen import ScreenConfig, run_screening
    from heads.screen.page import write_screening_page

    store = open_store(store_path, model=None)
    inputs = _inputs(store, text_embed)
    names = _class_names(class_names, store.classes)
    cfg = ScreenConfig(rounds=rounds, seed=seed, device=device)
    result = run_screening(inputs, cfg, None, out_dir)
    last = result.rounds[-1]["all"]
    click.echo(
        f"screened {len(inputs.labels)} samples in {len(result.rounds) - 1} rounds: "
        f"kept {last['kept']}, down-weighted {last['down_weighted']}, relabeled "
        f"{last['relabeled']}, dropped {last['dropped']} (out-of-set {last['out_of_set']}); "
        f"saved to {out_dir}"
    )
    page = write_screening_page(out_dir, result, store, suspects=suspects, store_path=store_path,
                                shards=shards, names=names, settings=vars(cfg))  # fmt: skip
    if show:
        click.echo(format_suspicious(result, store.paths, inputs.labels, names, show))
    click.echo(f"suspects page: {page.html}" + (f" ({page.note})" if page.note else ""))
