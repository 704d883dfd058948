"""Prediction: a merged model over images, shards or a feature store, to the challenge files.

    count, csv_path, zip_path = predict_source(Path("work/runs/latest"), Path("data/test"),
                                               Path("pred_results.csv"))
    rows = [("0001.jpg", class_id(classes, 42))]
    write_predictions(rows, Path("pred_results.csv"))   # also writes pred_results.zip

A folder of images is packed into temporary shards first (broken files repaired there, each
file read once); the names come from the shards' index, so the JPEGs are read once more only
to decode them. A file that cannot be read at all still gets a row: the fallback class (the
most frequent training class), named in a warning.

Format (DESIGN.md): one row per test image, no header, the file name exactly as in the test
folder, a comma and a space, the class id as four digits: `xxxx.jpg, 0042`.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from engine import paths
from engine import runs as run_files
from engine.atomic import write_atomic
from engine.classnames import class_id, class_ids  # class_id: imported from here by others
from engine.errors import UserError
from engine.faults import fault_point
from engine.outputs import claim_output_file
from engine.scratch import scratch_dir
from features.provenance import check_fresh, find_shards
from features.store import open_store

log = logging.getLogger(__name__)


def prediction_rows(names: Iterable[str], logits: np.ndarray, classes: list[str]):
    """(name, class id) per sample, argmax of the logits (n, K); classes with one id refused."""
    ids = class_ids(classes, "the model")
    best = np.asarray(logits).argmax(axis=1)
    return [(name, ids[int(i)]) for name, i in zip(names, best, strict=True)]


def format_rows(rows: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{name}, {cid}\n" for name, cid in rows)


def write_predictions(rows: Iterable[tuple[str, str]], out: Path) -> tuple[Path, Path]:
    """Write the CSV (UTF-8, '\\n' line ends) and a zip holding it, both atomically."""
    out = Path(out)
    text = format_rows(rows)
    write_atomic(out, text)
    zip_path = out.with_suffix(".zip")
    # fixed timestamp: the same predictions give the same zip bytes
    info = zipfile.ZipInfo(out.name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED

    def write_zip(f) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(info, text.encode("utf-8"))

    write_atomic(zip_path, write_zip)
    return out, zip_path


def claim_predictions(out: Path) -> None:
    """Refuse an `--out` (or the zip beside it) that exists and is not predictions: the engine
    overwrites only its own outputs (engine.outputs), never a user's document."""
    claim_output_file(out, "a predictions CSV", _looks_like_predictions)
    zip_path = Path(out).with_suffix(".zip")
    claim_output_file(zip_path, f"a zip of {Path(out).name}", _predictions_zip(Path(out).name),
                      option="the zip beside --out")  # fmt: skip


def _looks_like_predictions(path: Path) -> bool:
    """Every line `name, dddd` (what `write_predictions` writes)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    return all(_ROW.fullmatch(line) for line in lines)


def _predictions_zip(member: str):
    def check(path: Path) -> bool:
        try:
            with zipfile.ZipFile(path) as zf:
                return zf.namelist() == [member]
        except (OSError, zipfile.BadZipFile):
            return False

    return check


_ROW = re.compile(r".+, \d{4}")


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


def check_store_for_model(model, store, trained_weights: str | None) -> None:
    """Refuse a store the model cannot read: too shallow, or made with other CLIP weights."""
    store.check_depth(model.depth, alternative=" or predict from the images")
    made_with = store.weights.get("name")
    if trained_weights and made_with and made_with != trained_weights:
        raise UserError(
            f"feature store {store.path} was made with weights {made_with!r} but the model was "
            f"trained on a store made with {trained_weights!r}; rebuild the store with "
            f"`engine features SHARDS --weights {trained_weights} --out {store.path} --force`"
        )


def predict_store(model, store: Path, trained_weights: str | None = None, shards=None):
    """(names, logits (n, K), rejected names) from a cached feature store.

    The store holds only the files its shards accepted; the rejected ones (unreadable) come
    from the manifest of those shards (`shards`, else the folder the store recorded), so they
    get their fallback rows as they would from the folder itself.
    """
    data = open_store(store)
    folder, manifest, note = find_shards(data, shards)
    check_fresh(data, manifest, folder)
    check_store_for_model(model, data, trained_weights)
    logits = model.as_trained().predict_logits(data)
    if manifest is None:
        log.warning("files the feature store %s lacks (unreadable ones) get no row: %s",
                    store, note)  # fmt: skip
        return list(data.paths), logits, []
    return list(data.paths), logits, rejected_paths(manifest)


def rejected_paths(manifest: dict) -> list[str]:
    """The files `engine shard` could not read (they get the fallback row), as the manifest
    names them; the skipped ones (not images: hidden, links to nothing, FIFOs...) are named in
    a warning, without a row."""
    skipped = manifest.get("skipped", [])
    if skipped:
        log.warning("%d file(s) skipped, no row: %s", len(skipped),
                    ", ".join(f"{s['path']} ({s['reason']})" for s in skipped))  # fmt: skip
    return [r["path"] for r in manifest.get("rejected", [])]


def shard_paths(shards) -> list[str]:
    """Source file names of every sample, in store order, from the shards' small `json`
    members (found through the index): no pass over the JPEG bytes.

    Args:
        shards: a shard folder or an opened `shards.format.ShardSet`.
    """
    from shards.format import open_shards, read_shard_meta

    names: list[str] = []
    for entry in open_shards(shards).entries:
        names += read_shard_meta(entry).paths
    return names


def predict_shards(model, shard_dir: Path, batch_size: int = 64, backend: str = "auto"):
    """(names, logits (n, K), rejected names) by running the merged model on decoded images."""
    import torch

    from shards.decode import make_loader
    from shards.format import open_shards

    shards = open_shards(shard_dir)  # the manifest read and checked once, for all three uses
    names = shard_paths(shards)
    device = next(model.head.parameters()).device
    logits = np.zeros((len(names), len(model.classes)), dtype=np.float32)
    loader = make_loader(shards, backend=backend, batch_size=batch_size, views=1, device=device)
    for batch in loader:
        images = torch.as_tensor(batch.images[0]).to(device)  # (B, 3, 224, 224) eval view
        index = torch.as_tensor(batch.index).cpu().numpy()
        logits[index] = model.logits_from_images(images).float().cpu().numpy()  # (B, K)
        fault_point("predict-batch")
    return names, logits, rejected_paths(shards.manifest)


def predict_images(model, folder: Path, batch_size: int = 64, backend: str = "auto"):
    """Pack the folder into temporary shards (repairing broken files), then predict them."""
    from shards.config import ShardConfig
    from shards.writer import pack

    with scratch_dir("predict") as tmp:  # removed on any exit; swept if this run is killed
        shard_dir = tmp / "shards"
        # Unlabeled: a test folder's sub-folders are not classes; their files get rows too.
        pack(folder, shard_dir, ShardConfig(labeled=False))  # all cores; same bytes any count
        return predict_shards(model, shard_dir, batch_size, backend)


def prediction_table(model, names, logits, rejected) -> list[tuple[str, str]]:
    """Rows sorted by name; unreadable files get the fallback class, with a warning."""
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


def _trained_weights(run: Path) -> str | None:
    """The weights name the run's config.json records (None when it does not say)."""
    import json

    try:
        return json.loads((run / run_files.CONFIG).read_text(encoding="utf-8")).get("weights")
    except (OSError, ValueError, AttributeError):
        return None


def predict_source(run: Path, src: Path, out: Path, *, batch_size: int = 64,
                   backend: str = "auto", device: str = "auto",
                   shards: Path | None = None) -> tuple[int, Path, Path]:  # fmt: skip
    """`engine predict`: (rows written, CSV path, zip path); --out is checked first.

    `shards`: for a feature store SRC, the shards it was made from when they have moved.
    """
    from engine.runs import resolve_run
    from heads.export import load_model
    from heads.tensors import resolve_device

    out = paths.writable_file(Path(out), "--out")
    claim_predictions(out)
    kind = source_kind(Path(src))
    if kind == "images":  # names a CSV row cannot hold, or no file: refused before any work
        from shards.sources import list_sources

        list_sources(Path(src), labeled=False)
    run = resolve_run(Path(run))
    model = load_model(run, device=str(resolve_device(device)))
    class_ids(model.classes, run)  # two classes with one id: refused before any work
    if kind != "store" and model.visual is None:
        raise UserError(
            f"{run} holds only the head (trained without the store's backbone weights at "
            "hand): predict from a feature store of SRC, or retrain with --weights FILE"
        )
    if kind == "store":
        names, logits, rejected = predict_store(model, src, _trained_weights(Path(run)), shards)
    elif kind == "shards":
        names, logits, rejected = predict_shards(model, src, batch_size, backend)
    else:
        names, logits, rejected = predict_images(model, src, batch_size, backend)
    rows = prediction_table(model, names, logits, rejected)
    csv_path, zip_path = write_predictions(rows, out)
    return len(rows), csv_path, zip_path
