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
    from heads.predict import class_id

    classes = class_list(manifest)
    return {
        class_id(classes, i): float(manifest["class_counts"].get(c, 0))
        for i, c in enumerate(classes)
    }


def label_ids(labels: dict[str, str], classes: list[str] | None, path: Path) -> dict[str, str]:
    """The class ids of a label file: numbers as 4-digit ids (`42` -> `0042`), class folder
    names through `classes` (the id `engine predict` writes for that folder).

    Raises:
        UserError: a folder name with no class list to map it, or one not in the list
            (scoring it would silently count every such sample as wrong).
    """
    from heads.predict import class_id

    index = {name: i for i, name in enumerate(classes or [])}
    ids = {}
    for name, value in labels.items():
        if value.isascii() and value.isdigit():
            ids[name] = f"{int(value):04d}"
        elif value in index:
            ids[name] = class_id(classes, index[value])
        elif classes is None:
            raise UserError(
                f"{path} names class {value!r} (for {name!r}), not a 4-digit class id; pass "
                "--train-counts work/shards/train/manifest.json to map class folder names to ids"
            )
        else:
            raise UserError(
                f"{path} names class {value!r} (for {name!r}), which is neither a class id "
                f"nor one of the {len(classes)} class folders (e.g. {', '.join(classes[:3])})"
            )
    return ids


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
    from heads.metrics import evaluate, format_report

    manifest = read_manifest(train_counts) if train_counts else None
    counts = train_counts_from(manifest) if manifest else None
    classes = class_list(manifest) if manifest else None
    report = evaluate(_read(pred), label_ids(_read(labels), classes, labels), counts)
    click.echo(format_report(report))
    if json_out:
        write_json(json_out, report)
        from heads.report import refresh_report

        if refresh_report(json_out):  # into a run folder: its report.png gains the accuracy panel
            click.echo(f"report: {json_out.parent / 'report.png'}")
