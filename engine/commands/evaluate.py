"""`engine eval`: score a prediction CSV against a label CSV (both `name, 0042` lines).

    engine eval pred_results.csv data/test_labels.csv
    engine eval pred_results.csv labels.csv --train-counts work/shards/train/manifest.json

Prints top-1, balanced accuracy and head / medium / tail balanced accuracy; `--json FILE`
also writes per-class accuracy (to a new file, or over one an earlier `engine eval --json`
wrote: a user's file there is refused in one line, untouched). Both files are read by
`heads.id_rows.read_id_rows` (strict: ids normalised to four digits, a malformed or
conflicting line refused naming it).
"""

from __future__ import annotations

from pathlib import Path

import click

from engine.errors import UserError
from engine.outputs import claim_output_file


def read_manifest(path: Path) -> dict:
    """A shard manifest.json with class_counts, or one `UserError` line naming the file."""
    from engine.jsonfile import read_json

    try:
        manifest = read_json(path)
    except ValueError as err:  # truncated or not JSON, or not UTF-8
        raise UserError(
            f"{path} is not a readable JSON file ({err}); pass the manifest.json of `engine shard`"
        ) from err
    if not isinstance(manifest, dict) or not isinstance(manifest.get("class_counts"), dict):
        raise UserError(f"{path} has no class_counts; pass a shard manifest.json")
    return manifest


def class_list(manifest: dict) -> list[str]:
    return list(manifest.get("classes") or manifest["class_counts"])


def train_counts_from(manifest: dict) -> dict[str, float]:
    """Class id -> training count from a shard manifest (class_counts)."""
    from engine.classnames import class_id

    classes = class_list(manifest)
    return {
        class_id(classes, i): float(manifest["class_counts"].get(c, 0))
        for i, c in enumerate(classes)
    }


@click.command("eval")
@click.argument("pred", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("labels", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--train-counts",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Shard manifest.json: head/tail by training counts; maps class folder names to ids.",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the full report (per-class accuracy) here.",
)
def command(pred: Path, labels: Path, train_counts: Path | None, json_out: Path | None):
    """Top-1, balanced and per-class accuracy of PRED against LABELS."""
    from engine.jsonfile import write_json
    from heads.id_rows import read_id_rows
    from heads.metrics import evaluate, format_report, is_eval_report

    if json_out:  # before any work: a user's file there is refused, never overwritten
        claim_output_file(json_out, "an `engine eval` report", is_eval_report, option="--json")
    manifest = read_manifest(train_counts) if train_counts else None
    counts = train_counts_from(manifest) if manifest else None
    classes = class_list(manifest) if manifest else None
    predictions = read_id_rows(pred, what="predictions")
    report = evaluate(predictions, read_id_rows(labels, what="labels", classes=classes), counts)
    click.echo(format_report(report))
    if json_out:
        write_json(json_out, report)
        from heads.report import refresh_report

        drawn = refresh_report(json_out)  # into a run folder: its report gains the accuracy panel
        if drawn:
            click.echo(f"report: {drawn}")
