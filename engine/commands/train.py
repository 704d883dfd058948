"""`engine train`: train tail + head from the feature store into one merged model.

    engine train --unfreeze-last 2 --out work/runs/exp1
    engine train --features work/features/train.zarr --unfreeze-last 0 --rounds 0
    engine train --config work/runs/exp1/config.json       # re-make a run exactly

The run folder gets config.json (everything needed to re-run), metrics.jsonl (one line per
epoch), metrics.json, model.pt, checkpoint/last.pt (resume) and `<runs>/latest` points to it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from engine.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_FEATURES = "work/features/train.zarr"
DEFAULT_SHARDS = "work/shards/train"
DEFAULT_RUNS = "work/runs"
# Round 0 (frozen signals) + 2 cross-fitted rounds: each round retrains two tails, and rounds
# stop early anyway once fewer than ~1% of samples change state (ScreenConfig.stop_change).
DEFAULT_ROUNDS = 2


def read_class_names(path: Path) -> dict[str, str]:
    """`folder, name` lines (CSV, optional header-free) -> {folder: name}."""
    names = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        folder, sep, name = line.partition(",")
        if not sep or not name.strip():
            raise UserError(f"{path}:{lineno}: expected 'folder, class name', got {line!r}")
        names[folder.strip()] = name.strip().strip('"')
    return names


def _merge_settings(ctx: click.Context, options: dict) -> dict:
    """CLI options over --config file values over defaults; only explicit options override."""
    settings = {}
    if options["config"]:
        settings = json.loads(Path(options["config"]).read_text(encoding="utf-8"))
    train = dict(settings.get("train", {}))
    for name, key in (("unfreeze_last", "unfreeze_last"), ("seed", "seed"), ("loss", "loss")):
        if options[name] is not None:
            train[key] = options[name]
    settings["train"] = train
    for name in ("features", "shards", "rounds", "weights", "class_names", "runs"):
        source = ctx.get_parameter_source(name)
        if options[name] is not None and (
            source != click.core.ParameterSource.DEFAULT or name not in settings
        ):
            settings[name] = options[name]
    if settings.get("rounds") is None:
        settings["rounds"] = DEFAULT_ROUNDS
    return settings


@click.command("train")
@click.option(
    "--features",
    type=click.Path(path_type=Path),
    default=DEFAULT_FEATURES,
    show_default=True,
    help="Feature store; built from --shards when missing.",
)
@click.option(
    "--shards",
    type=click.Path(path_type=Path),
    default=DEFAULT_SHARDS,
    show_default=True,
    help="Shards to build the feature store from.",
)
@click.option(
    "--unfreeze-last",
    "unfreeze_last",
    type=click.IntRange(0, 12),
    default=None,
    help="k: trailing ViT blocks to train (0 = head only). [default: 0]",
)
@click.option(
    "--rounds",
    type=click.IntRange(0, 20),
    default=None,
    help="Screening rounds after round 0 (0 = no screening). [default: 2]",
)
@click.option("--seed", type=int, default=None, help="Seed of batch order and views. [default: 0]")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Run folder (default: work/runs/<timestamp>); an unfinished one resumes.",
)
@click.option(
    "--runs",
    type=click.Path(path_type=Path),
    default=DEFAULT_RUNS,
    show_default=True,
    help="Folder holding run folders and the `latest` pointer.",
)
@click.option(
    "--weights",
    default="openai",
    show_default=True,
    help="CLIP weights when features must be built: openai, a file, or random.",
)
@click.option(
    "--class-names",
    "class_names",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="CSV 'folder, name': init the head from CLIP text embeddings.",
)
@click.option(
    "--loss",
    default=None,
    help="Loss: ce, gce or sce (see heads.losses). [default: ce after screening, gce with --rounds 0]",
)
@click.option(
    "--config",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="A run's config.json: re-run it (explicit options override).",
)
@click.pass_context
def command(ctx: click.Context, **options) -> None:
    """Train head and last k blocks from the feature store; writes one merged model."""
    settings = _merge_settings(ctx, options)
    run = run_training(settings, out=options["out"])
    click.echo(f"model: {run / 'model.pt'}")


def default_loss(rounds: int) -> str:
    """The loss when none is chosen: robust GCE on raw noisy labels; plain (logit-adjusted)
    CE once screening has cleaned them, since GCE underfits the soft relabel targets
    (bench/NOISY.md: 66.3 vs 61.6 top-1 at 200 classes, imbalance 20, 30% noise)."""
    return "gce" if rounds == 0 else "ce"


def run_training(settings: dict, out: Path | None = None) -> Path:
    """The whole `engine train` from merged settings; returns the run folder."""
    from engine.jsonfile import write_json
    from engine.lock import hold_output_lock
    from engine.runs import append_jsonl, make_run_dir, point_latest
    from heads.config import TrainConfig
    from heads.data import load_features
    from heads.export import save_model
    from heads.trainer import fit

    settings["train"].setdefault("loss", default_loss(int(settings["rounds"])))
    cfg = TrainConfig.from_dict(settings["train"])
    settings["train"] = cfg.to_dict()  # complete: every default written down
    store = _ensure_store(Path(settings["features"]), Path(settings["shards"]), cfg, settings)
    data = load_features(store)
    if cfg.unfreeze_last > data.depth:
        raise UserError(
            f"--unfreeze-last {cfg.unfreeze_last} is larger than the depth {data.depth} of the "
            f"feature store {store}; rebuild features with `engine features SHARDS "
            f"--unfreeze-last {cfg.unfreeze_last} --out {store}` (or delete it and re-run train)"
        )
    runs = Path(settings["runs"])
    run = Path(out) if out is not None else make_run_dir(runs)
    run.mkdir(parents=True, exist_ok=True)
    hold_output_lock(run, what="run folder")  # one writer per run folder, until exit
    write_json(run / "config.json", settings)
    clip = _load_clip_for(data, settings)
    head_init = _text_head(clip, data.classes, settings.get("class_names"))
    targets, weights = _screen(settings, data, store, cfg, clip, head_init, run)
    write_json(run / "config.json", settings)  # now with the screening options used

    def on_epoch(epoch: int, metrics: dict) -> None:
        append_jsonl(run / "metrics.jsonl", metrics)

    trained = fit(
        data,
        cfg,
        targets,
        weights,
        on_epoch=on_epoch,
        clip=clip,
        head_init=head_init,
        checkpoint_dir=run / "checkpoint",
    )
    save_model(run, trained, clip, preprocess=data.attrs.get("preprocess"))
    write_json(run / "metrics.json", {"history": trained.history, "store": str(store)})
    if run.parent.resolve() == runs.resolve():
        point_latest(run)
    from engine.report import write_report

    click.echo(f"report: {write_report(run)}")
    return run


def _ensure_store(store: Path, shards: Path, cfg, settings: dict) -> Path:
    """The feature store, built from the shards (depth >= k) when it does not exist yet."""
    complete = (store / "zarr.json").exists() and _store_complete(store)
    if store.exists() and (complete or not (shards / "manifest.json").exists()):
        return store
    if not (shards / "manifest.json").exists():
        raise UserError(
            f"feature store {store} does not exist and there are no shards at {shards} to "
            "build it from; run `engine shard data/train` first or pass --features/--shards"
        )
    from features.config import FeatureConfig
    from features.extract import extract

    depth = max(cfg.unfreeze_last, FeatureConfig().depth)
    log.info("building feature store %s (depth %d) from %s", store, depth, shards)
    return Path(extract(shards, store, FeatureConfig(depth=depth, weights=settings["weights"])))


def _load_clip_for(data, settings: dict):
    """The CLIP model that made the store (its weights name and hash are in the store)."""
    from features.model import load_clip

    stored = data.attrs.get("weights", {}) or {}
    name = stored.get("name") or settings["weights"]
    given = Path(settings["weights"])
    if name in ("openai", "random"):
        weights = name
    elif given.is_file() and given.name == name:
        weights = str(given)
    else:
        raise UserError(
            f"the feature store was made with weights {name!r}; pass that file with --weights"
        )
    clip = load_clip(weights, "cpu")
    sha = stored.get("sha256")
    if sha and clip.weights_info.get("sha256") not in (None, sha):
        raise UserError(f"weights {weights} do not match the store's (sha256 {sha[:12]}...)")
    return clip


def _text_head(clip, classes: list[str], class_names):
    """(K, 512) text embeddings of the class names, or None (prototype init)."""
    if not class_names:
        return None
    from features.text import class_text_embeddings

    names = read_class_names(Path(class_names))
    missing = [c for c in classes if c not in names]
    if missing:
        log.warning(
            "%d classes have no name in %s (e.g. %s): using the folder name",
            len(missing),
            class_names,
            missing[:3],
        )
    emb = class_text_embeddings(clip, [names.get(c, c) for c in classes])
    return emb.detach().cpu().numpy() if hasattr(emb, "detach") else emb


def make_train_fn(data, cfg, clip, head_init):
    """`train_fn(train_idx, targets (N, K), weights (N,)) -> predict_fn(idx) -> (n, K) logits`,
    the trainer as screening rounds call it (cross-fitting: train on one half, score the other)."""
    from heads.trainer import fit

    def train_fn(train_idx, targets, weights):
        model = fit(data, cfg, targets, weights, indices=train_idx, clip=clip, head_init=head_init)

        def predict_fn(idx):
            return model.predict_logits(data, idx)

        return predict_fn

    return train_fn


def _screen(settings: dict, data, store: Path, cfg, clip, head_init, run: Path):
    """Targets and weights from `--rounds` screening rounds; (None, None) for --rounds 0."""
    rounds = int(settings.get("rounds") or 0)
    if rounds == 0:
        return None, None
    from heads.screen import run_screening

    result = _call_screening(run_screening, settings, data, store, cfg, clip, head_init, run)
    from heads.screen.page import write_screening_page

    names = read_class_names(Path(settings["class_names"])) if settings.get("class_names") else None
    page = write_screening_page(run / "rounds", result, data, store_path=store,
                                shards=settings["shards"], names=names, settings=settings["screen"])  # fmt: skip
    click.echo(f"suspects page: {page.html}" + (f" ({page.note})" if page.note else ""))
    return result.targets, result.weights


def _call_screening(run_screening, settings, data, store, cfg, clip, head_init, run):
    """Rounds 0..R of `heads.screen` with this trainer as the student; saved in run/rounds/."""
    import numpy as np

    from heads.screen import ScreenConfig, ScreenInputs
    from heads.tensors import read_rows

    rows = np.arange(data.num_samples)
    embed = read_rows(data.embed, None, rows).astype(np.float32)  # (N, D)
    inputs = ScreenInputs(embed, data.labels, num_classes=len(data.classes), text_embed=head_init)
    own = {"rounds": int(settings["rounds"]), "seed": cfg.seed, "device": cfg.device}
    screen_cfg = ScreenConfig(**{**settings.get("screen", {}), **own})  # run-wide keys win
    settings["screen"] = {k: v for k, v in vars(screen_cfg).items() if k not in own}
    train_fn = make_train_fn(data, cfg, clip, head_init)
    return run_screening(inputs, screen_cfg, train_fn, run / "rounds")


def _store_complete(store: Path) -> bool:
    """False only for a store whose extraction is known unfinished (then it is resumed)."""
    import zarr

    return bool(dict(zarr.open_group(str(store), mode="r").attrs).get("complete", True))
