"""`engine predict`: class predictions for a test folder, shards or a feature store.

    engine predict data/test --model work/runs/latest
    engine predict work/features/test.zarr --model work/runs/exp1 --out pred_results.csv

Writes `pred_results.csv` (`name.jpg, 0042` per input file, no header) and
`pred_results.zip`. A folder of images is packed into temporary shards first (broken files
repaired there); a file that cannot be read at all still gets a row: the fallback class (the
most frequent training class), named in a warning.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import click

from engine.errors import UserError
from engine.faults import fault_point

log = logging.getLogger(__name__)


def source_kind(src: Path) -> str:
    """'store', 'shards' or 'images' for a prediction source folder."""
    if (src / "zarr.json").exists():
        return "store"
    if (src / "manifest.json").exists():
        return "shards"
    if src.is_dir():
        return "images"
    raise UserError(
        f"cannot predict from {src}: give a folder of images, shards or a feature store"
    )


def predict_store(model, store: Path):
    """(names, logits) from a cached feature store."""
    from heads.data import load_features

    data = load_features(store)
    if not data.paths:
        raise UserError(
            f"feature store {store} has no `paths` array; rebuild it with engine features"
        )
    logits = model.as_trained().predict_logits(data)
    return list(data.paths), logits, []


def predict_shards(model, shard_dir: Path, batch_size: int = 64, backend: str = "auto"):
    """(names, logits, rejected) by running the merged model on decoded images."""
    import numpy as np
    import torch

    from shards.decode import make_loader
    from shards.manifest import load_manifest
    from shards.reader import iter_samples

    manifest = load_manifest(shard_dir)
    paths = [s.meta.get("path", s.key) for s in iter_samples(shard_dir)]
    device = next(model.head.parameters()).device
    logits = np.zeros((len(paths), len(model.classes)), dtype=np.float32)
    loader = make_loader(shard_dir, backend=backend, batch_size=batch_size, views=1, device=device)
    for batch in loader:
        images = torch.as_tensor(batch.images[0]).to(device)  # (B, 3, 224, 224) eval view
        index = torch.as_tensor(batch.index).cpu().numpy()
        logits[index] = model.logits_from_images(images).float().cpu().numpy()
        fault_point("predict-batch")
    rejected = [r["path"] for r in manifest.get("rejected", [])]
    return paths, logits, rejected


def predict_images(model, folder: Path, batch_size: int = 64, backend: str = "auto"):
    """Pack the folder into temporary shards (repairing broken files), then predict them."""
    from shards.config import ShardConfig
    from shards.writer import pack

    with tempfile.TemporaryDirectory(prefix="engine-predict-") as tmp:
        shard_dir = Path(tmp) / "shards"
        pack(folder, shard_dir, ShardConfig())  # all cores; same bytes whatever the count
        return predict_shards(model, shard_dir, batch_size, backend)


def prediction_table(model, names, logits, rejected) -> list[tuple[str, str]]:
    """Rows sorted by name; unreadable files get the fallback class, with a warning."""
    from heads.predict import class_id, prediction_rows

    rows = prediction_rows(names, logits, model.classes)
    if rejected:
        fallback = class_id(model.classes, model.fallback_class)
        log.warning(
            "%d file(s) could not be read and get the fallback class %s (most frequent "
            "training class): %s",
            len(rejected),
            fallback,
            ", ".join(rejected),
        )
        rows += [(name, fallback) for name in rejected]
    return sorted(rows)


@click.command("predict")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--model",
    "model_dir",
    type=click.Path(exists=True, path_type=Path),
    default="work/runs/latest",
    show_default=True,
    help="Run folder holding model.pt.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default="pred_results.csv",
    show_default=True,
    help="CSV to write (zip beside it).",
)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option(
    "--backend",
    default="auto",
    show_default=True,
    help="Image decoding: auto, dali-gpu, dali-cpu or pil.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
def command(src: Path, model_dir: Path, out: Path, batch_size: int, backend: str, device: str):
    """Predict a class for every file of SRC (images, shards or a feature store)."""
    from engine.lock import hold_output_lock
    from engine.runs import resolve_run
    from heads.export import load_model
    from heads.predict import write_predictions
    from heads.tensors import resolve_device

    hold_output_lock(out, what="prediction file")  # fails now, not after inference, if unwritable
    model = load_model(resolve_run(model_dir), device=str(resolve_device(device)))
    kind = source_kind(src)
    if kind == "store":
        names, logits, rejected = predict_store(model, src)
    elif kind == "shards":
        names, logits, rejected = predict_shards(model, src, batch_size, backend)
    else:
        names, logits, rejected = predict_images(model, src, batch_size, backend)
    csv_path, zip_path = write_predictions(prediction_table(model, names, logits, rejected), out)
    click.echo(f"{len(names) + len(rejected)} predictions: {csv_path} and {zip_path}")
