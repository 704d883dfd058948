"""`engine eval`: score a prediction CSV against a label CSV (both `name, 0042` lines).

    engine eval pred_results.csv data/test_labels.csv
    engine eval pred_results.csv labels.csv --train-counts work/shards/train/manifest.json

Prints top-1, balanced accuracy and head / medium / tail balanced accuracy; `--json FILE`
also writes per-class accuracy.
"""

from __future__ import annotations

from pathlib import Path

import click

from engine.errors import UserError


def _read(path: Path) -> dict[str, str]:
    from heads.predict import read_predictions

    try:
        return read_predictions(path)
    except ValueError as err:
        raise UserError(f"{err}; expected lines 'name.jpg, 0042'") from err


def train_counts_from(path: Path) -> dict[str, float]:
    """Class id -> training count from a shard manifest.json (class_counts)."""
    from engine.jsonfile import read_json
    from heads.predict import class_id

    manifest = read_json(path)
    if "class_counts" not in manifest:
        raise UserError(f"{path} has no class_counts; pass a shard manifest.json")
    classes = list(manifest.get("classes") or manifest["class_counts"])
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
    help="Shard manifest.json: head/tail by training counts.",
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
    from heads.metrics import evaluate, format_report

    counts = train_counts_from(train_counts) if train_counts else None
    report = evaluate(_read(pred), _read(labels), counts)
    click.echo(format_report(report))
    if json_out:
        write_json(json_out, report)
        from engine.report import refresh_report

        if refresh_report(json_out):  # into a run folder: its report.png gains the accuracy panel
            click.echo(f"report: {json_out.parent / 'report.png'}")
