"""`engine train`: train tail + head from the feature store into one merged model.

    engine train --unfreeze-last 2 --out work/runs/exp1
    engine train --features work/features/train.zarr --unfreeze-last 0 --rounds 0
    engine train --config work/runs/exp1/config.json       # re-make a run exactly

The run folder's files are named in `engine.runs` (config.json re-makes the run, model.pt,
report.png, rounds/, finished.json last); `<runs>/latest` points to it. `--out` resumes an
unfinished run and refuses a finished one or a folder of the user's (`engine.outputs`). The
run itself is `heads.pipeline.run_training`; this module only reads the options.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from engine import paths
from engine import runs as run_files
from engine.commands.options import (
    NamesOption,
    deterministic_option,
    folder_mixture_option,
    head_names,
    loss_names,
    screen_extra_option,
)
from engine.errors import UserError

# Options copied into the `train` section / the top level of the run config when given.
TRAIN_OPTIONS = ("unfreeze_last", "seed", "loss", "head", "deterministic")
RUN_OPTIONS = ("features", "shards", "rounds", "weights", "class_names", "runs")


def read_config_file(path: Path | None) -> dict:
    """A run's config.json as a dict ({} without --config); one line when it is not JSON."""
    if path is None:
        return {}
    try:
        settings = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(
            f"--config {path} is not a JSON file ({err}); pass a run's config.json"
        ) from err
    if not isinstance(settings, dict):
        raise UserError(f"--config {path} must hold a JSON object, got {type(settings).__name__}")
    return settings


def merge_settings(ctx: click.Context, options: dict) -> dict:
    """CLI options over --config file values over defaults; only explicit options override.
    Relative paths in the file are relative to its folder; those of options, to the working one."""
    from heads.pipeline import resolve_config_paths

    settings = read_config_file(options["config"])
    if options["config"] is not None:
        settings = resolve_config_paths(settings, options["config"])
    train = dict(settings.get("train") or {})
    train.update({k: options[k] for k in TRAIN_OPTIONS if options[k] is not None})
    settings["train"] = train
    for name in RUN_OPTIONS:
        explicit = ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
        if options[name] is not None and (explicit or name not in settings):
            settings[name] = (
                str(options[name]) if isinstance(options[name], Path) else options[name]
            )
    screen = dict(settings.get("screen") or {})
    if options["screen_extra"]:
        screen["extras"] = list(options["screen_extra"])
    if options["folder_mixture"] is not None:  # on: the file's settings, else the defaults
        screen["mixture"] = (screen.get("mixture") or {}) if options["folder_mixture"] else None
    if screen != (settings.get("screen") or {}):
        settings["screen"] = screen
    return settings


@click.command("train")
@click.option("--features", type=click.Path(path_type=Path), default=paths.FEATURES_TRAIN,
              show_default=True, help="Feature store; built from --shards when missing.")  # fmt: skip
@click.option("--shards", type=click.Path(path_type=Path), default=None,
              help="Shards the feature store is (or was) made from: builds a missing store, "
              "finds moved shards (checked by fingerprint); the suspects page's thumbnails come "
              "from them. [default: the folder the store recorded, else work/shards/train]")  # fmt: skip
@click.option("--unfreeze-last", "unfreeze_last", type=click.IntRange(0, 12), default=None,
              help="k: trailing ViT blocks to train (0 = head only). [default: 0]")  # fmt: skip
@click.option("--rounds", type=click.IntRange(0, 20), default=None,
              help="Screening rounds after round 0 (0 = no screening). [default: 2]")  # fmt: skip
@click.option("--seed", type=int, default=None, help="Seed of batch order and views. [default: 0]")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder (default: a new <runs>/<timestamp>); an unfinished run resumes, a "
              "finished one is refused.")  # fmt: skip
@click.option("--runs", type=click.Path(path_type=Path), default=paths.RUNS, show_default=True,
              help="Folder holding run folders and the `latest` pointer.")  # fmt: skip
@click.option("--weights", default=None,
              help="CLIP weights when features must be built: openai, a file, or random. "
              "[default: the store's, else openai]")  # fmt: skip
@click.option("--class-names", "class_names", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None,
              help="CSV 'folder, name' per class: zero-shot signal and text-initialised head.")  # fmt: skip
@click.option("--loss", default=None, cls=NamesOption, names=loss_names,
              help="Loss. [default: ce after screening, gce with --rounds 0]")  # fmt: skip
@click.option("--head", default=None, cls=NamesOption, names=head_names,
              help="Classifier head. [default: cosine]")  # fmt: skip
@screen_extra_option
@folder_mixture_option
@deterministic_option
@click.option("--config", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A run's config.json: re-run it (explicit options override).")  # fmt: skip
@click.pass_context
def command(ctx: click.Context, **options) -> None:
    """Train head and last k blocks from the feature store; writes one merged model."""
    from heads.numerics import apply_numerics
    from heads.pipeline import run_config_from, run_training

    cfg = run_config_from(merge_settings(ctx, options))
    apply_numerics(deterministic=cfg.train.deterministic)  # before the first CUDA kernel
    run = run_training(cfg, out=options["out"])
    page = run / run_files.ROUNDS / run_files.SUSPECTS_PAGE
    if page.is_file():
        click.echo(f"suspects page: {page}")
    click.echo(f"report: {run / run_files.REPORT}")
    click.echo(f"model: {run / run_files.MODEL}")
