"""The whole `engine train` run: inputs checked, store built, screening rounds, LP-FT, export.

    cfg = run_config_from({"rounds": 0, "train": {"unfreeze_last": 2}})
    run = run_training(cfg, out=None)      # work/runs/<timestamp>/ with model.pt, metrics, ...

A run folder is created only once every input is validated (config, class names, store,
weights, output folder), so a refused run leaves nothing behind. Its files are named in
`engine.runs`; `--out` follows the output-folder rule (`engine.outputs`): missing, empty, or an
unfinished run of the same settings (resumed); a finished run or a folder of the user's is
refused. A run that fails later is marked (`failed.json` with the error) or, when it holds
nothing to resume, removed; `finished.json` is written last and `latest` moves only to a
finished run. `config.json` is `to_dict(RunConfig)` with its paths relative to the run folder
(`config_record`), so `engine train --config RUN/config.json` re-makes the run exactly, from
any working folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from engine import paths
from engine import runs as run_files
from engine.config import from_dict, to_dict
from engine.errors import UserError
from engine.lock import output_lock
from engine.outputs import fresh_output_dir, remove_owned
from heads.config import TrainConfig
from heads.screen import ScreenConfig

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """Everything one `engine train` run needs; written to the run's config.json."""

    # The feature store; built from `shards` when missing (DESIGN's default layout).
    features: str = str(paths.FEATURES_TRAIN)
    # The shards the store is (or was) made from; None = the folder the store recorded
    # (work/shards/train to build a missing store). The suspects page's thumbnails come from it.
    shards: str | None = None
    # Folder of run folders and the `latest` pointer.
    runs: str = str(paths.RUNS)
    # CLIP weights: the store's own when it exists (its name is what is stamped here).
    weights: str = "openai"
    # Optional `folder, name` CSV: zero-shot signal and text-initialised head.
    class_names: str | None = None
    # Round 0 (frozen signals) + 2 cross-fitted rounds; rounds stop early anyway once fewer
    # than ~1% of samples change state (ScreenConfig.stop_change).
    rounds: int = 2
    train: TrainConfig = field(default_factory=TrainConfig)
    screen: ScreenConfig = field(default_factory=ScreenConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.rounds <= 20:
            raise UserError(f"rounds (--rounds) must be in 0..20, got {self.rounds}")
        # Run-wide keys win over the screen section's own copies (one seed, one device).
        own = {"rounds": self.rounds, "seed": self.train.seed, "device": self.train.device}
        if any(getattr(self.screen, k) != v for k, v in own.items()):
            self.screen = dataclasses.replace(self.screen, **own)


def default_loss(rounds: int) -> str:
    """The loss when none is chosen: robust GCE on raw noisy labels; plain (logit-adjusted)
    CE once screening has cleaned them, since GCE underfits the soft relabel targets
    (bench/NOISY.md: 66.3 vs 61.6 top-1 at 200 classes, imbalance 20, 30% noise)."""
    return "gce" if rounds == 0 else "ce"


def run_config_from(settings: dict) -> RunConfig:
    """A RunConfig from merged settings (a config.json plus options); unknown keys refused."""
    if not isinstance(settings, dict):
        raise UserError(f"--config must hold a JSON object, got {type(settings).__name__}")
    settings = dict(settings)
    rounds = settings.get("rounds", RunConfig.rounds)
    train = dict(settings.get("train") or {})
    train.setdefault("loss", default_loss(int(rounds) if isinstance(rounds, int) else 1))
    settings["train"] = train
    return from_dict(RunConfig, settings, where="config")


def run_training(cfg: RunConfig, out: Path | None = None) -> Path:
    """Train, export and report one run; returns its folder (see the module docstring)."""
    from engine.classnames import check_class_ids
    from heads.inputs import backbone_weights, ensure_store

    names = _read_names(cfg.class_names)
    runs = paths.writable_dir(Path(cfg.runs), "--runs")
    if out is not None:
        paths.writable_dir(Path(out), "--out")
        run_files.claim_run_dir(Path(out), create=False)  # a finished run: refused at once
    given = Path(cfg.shards) if cfg.shards else None
    data, *shards = ensure_store(Path(cfg.features), given, cfg.train.unfreeze_last, cfg.weights)
    check_class_ids(data.classes, data.path)  # older shards may hold two classes with one id
    data.check_depth(cfg.train.unfreeze_last)
    weights = backbone_weights(data.attrs, cfg.weights, need=cfg.train.unfreeze_last > 0)
    cfg.weights = _stamp(data.attrs, weights)
    clip = _backbone(data.attrs, weights)
    head_init = _text_head(clip, data.classes, names, weights)
    run, created = _make_run(runs, out, cfg)
    with output_lock(run, wait=False, what="run folder"):  # one writer per run folder
        try:
            _train_in(run, cfg, data, shards, names, clip, head_init)
        except BaseException as err:
            _mark_failed(run, created, err)
            raise
    if run.parent.resolve() == runs.resolve() and run_files.point_latest(run) is None:
        log.warning("%s is not the engine's pointer; left as it is", runs / run_files.LATEST)
    return run


# RunConfig fields that are paths: config.json holds them relative to its own folder (the run
# folder), and `--config FILE` reads relative ones against FILE's folder (resolve_config_paths),
# so a config works from any working folder and a run tree can move as a whole.
PATH_KEYS = ("features", "shards", "runs", "class_names")


def config_record(cfg: RunConfig, run: Path) -> dict:
    """What config.json holds: `to_dict(cfg)`, its paths (a weights file too) relative to `run`."""
    record = json.loads(json.dumps(to_dict(cfg), default=str))
    keys = [k for k in PATH_KEYS if record.get(k)]
    if cfg.weights not in ("openai", "random") and Path(cfg.weights).is_file():
        keys.append("weights")
    here = Path(run).absolute()
    for key in keys:
        record[key] = os.path.relpath(Path(record[key]).absolute(), here)
    return record


def resolve_config_paths(settings: dict, config_file: Path) -> dict:
    """Settings read from `config_file` with its relative paths made relative to the working
    folder (they are relative to the file's own folder, see `config_record`)."""
    base, settings = Path(config_file).parent, dict(settings)
    for key in (*PATH_KEYS, "weights"):
        value = settings.get(key)
        if not isinstance(value, str) or not value or Path(value).is_absolute():
            continue
        if key == "weights" and value in ("openai", "random"):
            continue
        settings[key] = os.path.normpath(base / value)
    return settings


def _train_in(run: Path, cfg: RunConfig, data, shards, names, clip, head_init) -> None:
    """Screening rounds, the final fit, model.pt, metrics and the report, in `run`."""
    from engine.jsonfile import write_json
    from heads.export import save_model
    from heads.trainer import fit

    write_json(run / run_files.CONFIG, config_record(cfg, run))
    (run / run_files.FAILED).unlink(missing_ok=True)
    targets, weights = _screen(cfg, data, shards, names, clip, head_init, run)

    def on_epoch(epoch: int, metrics: dict) -> None:
        run_files.append_jsonl(run / run_files.METRICS_LINES, metrics)

    trained = fit(data, cfg.train, targets, weights, on_epoch=on_epoch, clip=clip,
                  head_init=head_init, checkpoint_dir=run / run_files.CHECKPOINT)  # fmt: skip
    save_model(run, trained, clip, preprocess=data.attrs.get("preprocess"))
    # Whole again from the fit's history: a resumed run appended after the lines of the
    # attempt it resumed, which may have outrun its last checkpoint.
    run_files.write_jsonl(run / run_files.METRICS_LINES, trained.history)
    write_json(run / run_files.METRICS, {"history": trained.history, "store": str(data.path)})
    from heads.report import write_report

    write_report(run)
    run_files.mark_finished(run)  # last: from now on the folder is refused as --out


def _read_names(class_names: str | None) -> dict[str, str] | None:
    if not class_names:
        return None
    from engine.classnames import read_class_names

    return read_class_names(Path(class_names))


def _stamp(attrs: dict, weights: str | None) -> str:
    """The weights config.json records: what made the store (its file's path when it is a
    file at hand, so `--config` finds it again), never the option's default."""
    return weights or (attrs.get("weights") or {}).get("name") or "unknown"


def _backbone(attrs: dict, weights: str | None):
    if weights is None:
        return None
    from heads.inputs import load_backbone

    return load_backbone(attrs, weights)


def _text_head(clip, classes: list[str], names: dict[str, str] | None, weights: str | None):
    """(K, 512) text embeddings of the class names, or None (prototype init, no zero-shot)."""
    if names is None:
        return None
    if weights == "random" or clip is None:
        log.warning(
            "--class-names ignored: with %s the zero-shot signal and the text-initialised "
            "head are off (they would be noise); the head starts from class prototypes",
            "--weights random" if weights == "random" else "no text tower at hand",
        )
        return None
    from engine.classnames import names_in_class_order
    from features.text import class_text_embeddings

    ordered, missing = names_in_class_order(names, classes)
    if missing:
        log.warning("%d classes have no name in --class-names (e.g. %s): using the folder "
                    "name", len(missing), missing[:3])  # fmt: skip
    emb = class_text_embeddings(clip, ordered)
    return emb.detach().cpu().numpy() if hasattr(emb, "detach") else emb


def _make_run(runs: Path, out: Path | None, cfg: RunConfig) -> tuple[Path, bool]:
    """(run folder, whether this call created it): a new one under `runs`, or `--out` claimed
    (an unfinished run there resumes when its settings are these)."""
    if out is None:
        return run_files.new_run_dir(runs), True
    run = Path(out)
    if not run_files.claim_run_dir(run):
        return run, True
    saved = run / run_files.CONFIG
    if saved.is_file():
        before = json.loads(saved.read_text(encoding="utf-8"))
        differ = _differences(before, config_record(cfg, run))
        if differ:
            raise UserError(
                f"--out {run} holds an unfinished run with other settings ({', '.join(differ)} "
                f"differ); resume it with `engine train --config {saved} --out {run}`, or "
                "choose another --out"
            )
    return run, False


def _differences(before: dict, now: dict, prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ (`train.seed`), sections looked into."""
    found = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            found += _differences(old, new, f"{prefix}{key}.")
        elif old != new:
            found.append(f"{prefix}{key}")
    return found


def _mark_failed(run: Path, created: bool, err: BaseException) -> None:
    """Remove a run this call created that holds nothing to resume; else mark it failed."""
    left = {p.name for p in run.iterdir()} - {run_files.CONFIG, run_files.MARKER}
    if created and not left:
        try:
            remove_owned(run, run_files.RUN_OUTPUT)
            return
        except (UserError, OSError) as why:  # never hide the error that stopped the run
            log.warning("could not remove %s: %s", run, why)
    from engine.jsonfile import write_json

    try:
        write_json(run / run_files.FAILED, {"error": f"{type(err).__name__}: {err}"})
    except OSError:
        log.warning("could not mark %s as failed", run)


def make_train_fn(data, cfg: TrainConfig, clip, head_init):
    """`train_fn(train_idx, targets (N, K), weights (N,)) -> predict_fn(idx) -> (n, K) logits`,
    the trainer as screening rounds call it (cross-fitting: train on one half, score the other)."""
    from heads.trainer import fit

    def train_fn(train_idx, targets, weights):
        model = fit(data, cfg, targets, weights, indices=train_idx, clip=clip, head_init=head_init)

        def predict_fn(idx):
            return model.predict_logits(data, idx)

        return predict_fn

    return train_fn


def _screen(cfg: RunConfig, data, shards, names, clip, head_init, run: Path):
    """Targets and weights from `rounds` screening rounds; (None, None) for rounds = 0."""
    if cfg.rounds == 0:
        return None, None
    import numpy as np

    from heads.screen import ScreenInputs, run_screening
    from heads.tensors import read_rows

    rows = np.arange(data.num_samples)
    embed = read_rows(data.embed, None, rows).astype(np.float32)  # (N, D)
    inputs = ScreenInputs(embed, data.labels, num_classes=len(data.classes), text_embed=head_init)
    train_fn = make_train_fn(data, cfg.train, clip, head_init)
    # Screening does not resume: the rounds of an interrupted attempt are removed first.
    rounds = fresh_output_dir(run / run_files.ROUNDS, run_files.SCREEN_OUTPUT)
    result = run_screening(inputs, cfg.screen, train_fn, rounds)
    from heads.screen.page import write_screening_page

    folder, note = shards  # the store's shards (or why there are none): the page's thumbnails
    page = write_screening_page(rounds, result, data, shards=folder, shards_note=note,
                                names=names, settings=to_dict(cfg.screen))  # fmt: skip
    log.info("suspects page: %s%s", page.html, f" ({page.note})" if page.note else "")
    return result.targets, result.weights
