"""`engine screen`: noisy-label screening alone on a feature store (no tail training).

    result, store, inputs = screen_store(Path("work/features/train.zarr"), ScreenConfig(),
                                         Path("work/screen"), shards=Path("work/shards/train"))

Rounds >= 1 retrain the screening's own linear probe on the stored embeddings (k = 0,
seconds). The shards (`shards`, else the folder the store recorded) must be the store's own
and the store fresh (`features.provenance`); the page's thumbnails come from them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import UserError
from engine.outputs import claim_output_dir, fresh_output_dir
from engine.runs import SCREEN_OUTPUT


def screening_inputs(store, text_embed: Path | None):
    """`ScreenInputs` of a store: (N, D) embeddings, (N,) labels, optional (K, D) text."""
    from heads.screen import ScreenInputs

    labels = np.asarray(store.labels, np.int64)
    if (labels < 0).any():
        raise UserError(f"{store.path} has unlabeled samples; screening needs a labeled split")
    text = None
    if text_embed is not None:
        text = np.load(text_embed).astype(np.float32)
        if text.shape != (len(store.classes), store.embed.shape[1]):
            raise UserError(f"--text-embed {text_embed} has shape {text.shape}; need (K, D)")
    embed = np.asarray(store.embed[:], dtype=np.float32)  # (N, D)
    return ScreenInputs(embed, labels, len(store.classes), text)


def screen_store(store_path: Path, cfg, out_dir: Path, *, text_embed: Path | None = None,
                 shards: Path | None = None, names=None, suspects: int = 200):  # fmt: skip
    """(ScreenResult, FeatureStore, ScreenInputs, SuspectsFiles) of `cfg.rounds` rounds saved
    in `out_dir`, with the suspects page (`heads.screen.page`) beside them."""
    from engine import paths
    from engine.config import to_dict
    from features.provenance import check_fresh, find_shards
    from features.store import open_store
    from heads.screen import run_screening
    from heads.screen.page import write_screening_page

    paths.writable_dir(Path(out_dir), "--out")
    claim_output_dir(Path(out_dir), SCREEN_OUTPUT, create=False)  # refused before any work
    store = open_store(Path(store_path))
    folder, manifest, note = find_shards(store, shards)
    check_fresh(store, manifest, folder)
    inputs = screening_inputs(store, text_embed)
    # Every round is recomputed: an earlier screening's rounds (maybe more of them) go first.
    fresh_output_dir(Path(out_dir), SCREEN_OUTPUT)
    result = run_screening(inputs, cfg, None, out_dir)
    page = write_screening_page(out_dir, result, store, suspects=suspects, shards=folder,
                                shards_note=note, names=names, settings=to_dict(cfg))  # fmt: skip
    return result, store, inputs, page
