"""`engine screen`: run noisy-label screening alone on a feature store and inspect it.

    engine screen --features work/features/train.zarr --rounds 2 --out work/screen --show 20

The run is `heads.screen_store.screen_store`: rounds >= 1 retrain the screening's own linear
probe on the stored embeddings (k = 0, seconds). `engine train --rounds R` plugs its own
trainer into the same rounds instead.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from engine import paths
from engine.commands.options import folder_mixture_option, screen_extra_option

log = logging.getLogger(__name__)


def _class_names(path: Path | None, classes: list[str]) -> list[str]:
    """Display name per class from a `folder, name` CSV (the format `engine train` reads)."""
    if path is None:
        return list(classes)
    from engine.classnames import names_in_class_order, read_class_names

    names, missing = names_in_class_order(read_class_names(path), classes)
    if missing:
        log.warning("%d classes have no name in %s (e.g. %s): using the folder name",
                    len(missing), path, missing[:3])  # fmt: skip
    return names


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
              default=paths.FEATURES_TRAIN, show_default=True, help="Feature store to screen.")  # fmt: skip
@click.option("--rounds", type=click.IntRange(0, 20), default=2, show_default=True,
              help="Rounds after round 0 (each retrains the probe on two cross-fitted halves).")  # fmt: skip
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=paths.SCREEN_OUT, show_default=True, help="Folder for rounds and summary.json.")  # fmt: skip
@click.option(
    "--show", type=click.IntRange(0), default=0, help="List the N most suspicious samples."
)
@click.option("--class-names", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV 'folder, name' per class: names shown by --show.")  # fmt: skip
@click.option("--text-embed", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="(K, D) .npy of class text embeddings for the zero-shot signal.")  # fmt: skip
@click.option("--suspects", type=click.IntRange(0), default=200, show_default=True,
              help="Cards on the suspects.html page written into --out.")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="Where kNN and the probe run (auto: CUDA when present).")  # fmt: skip
@click.option("--shards", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Shards the store was made from, when they have moved (refused "
              "if their fingerprint is not the store's); the page's thumbnails come from them. "
              "[default: the folder the store recorded]")  # fmt: skip
@screen_extra_option
@folder_mixture_option
def command(store_path, rounds, out_dir, show, class_names, text_embed, suspects, seed, device,
            shards, screen_extra, folder_mixture):  # fmt: skip
    """Find, relabel and down-weight noisy samples; save every round; show the worst."""
    from engine.config import from_dict
    from features.store import open_store
    from heads.numerics import apply_numerics
    from heads.screen import STATES, ScreenConfig
    from heads.screen_store import screen_store

    apply_numerics()  # TF32 kNN and probe, deterministic kernels: before the first CUDA kernel

    extras = {"extras": tuple(screen_extra)} if screen_extra else {}
    if folder_mixture is False:
        extras["mixture"] = None
    cfg = from_dict(ScreenConfig, {"rounds": rounds, "seed": seed, "device": device, **extras})
    names = _class_names(class_names, open_store(store_path).classes)
    result, store, inputs, page = screen_store(store_path, cfg, out_dir, text_embed=text_embed,
                                               shards=shards, names=names, suspects=suspects)  # fmt: skip
    last = result.rounds[-1]["all"]
    named = ""
    if result.mixture_class is not None:
        moved = int((result.mixture_class != inputs.labels).sum())
        named = f"; folder mixture: {moved} named another class than their folder"
    click.echo(
        f"screened {len(inputs.labels)} samples in {len(result.rounds) - 1} rounds: "
        + ", ".join(f"{state.replace('_', '-')} {last[state]}" for state in STATES)
        + f"{named}; saved to {out_dir}"
    )
    if show:
        click.echo(format_suspicious(result, store.paths, inputs.labels, names, show))
    click.echo(f"suspects page: {page.html}" + (f" ({page.note})" if page.note else ""))
