"""`engine shard SRC`: pack an image folder into WebDataset shards, repairing broken files.

engine shard data/train                  # -> work/shards/train/
engine shard data/test --out work/shards/test --short-side 512 --workers 8
"""

from __future__ import annotations

from pathlib import Path

import click

from engine import paths
from shards.config import DEFAULT_SHARD_SIZE, DEFAULT_SHORT_SIDE

# ShardConfig refuses smaller short sides (a 224 px model input needs some margin).
MIN_SHORT_SIDE = 32


def check_short_side(ctx, param, value: int) -> int:
    """0 (keep every size) or at least MIN_SHORT_SIDE pixels, named as the option."""
    if value != 0 and value < MIN_SHORT_SIDE:
        raise click.BadParameter(
            f"must be 0 (keep every size) or >= {MIN_SHORT_SIDE} pixels, got {value}"
        )
    return value


@click.command(name="shard")
@click.argument("src", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder. [default: work/shards/<name of SRC>]",
)
@click.option(
    "--short-side",
    type=click.IntRange(min=0),
    default=DEFAULT_SHORT_SIDE,
    callback=check_short_side,
    show_default=True,
    help="Downscale images whose short side is larger (0 = keep every size).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes. [default: all cores]",
)
@click.option(
    "--shard-size", type=click.IntRange(min=1), default=DEFAULT_SHARD_SIZE, show_default=True
)
@click.option(
    "--labeled/--unlabeled",
    default=None,
    help="Class folders or a flat folder. [default: detected from SRC]",
)
@click.option("--force", is_flag=True, help="Rebuild even if (partial) shards exist.")
def command(src, out, short_side, workers, shard_size, labeled, force) -> None:
    """Pack SRC (class folders, or a flat folder of images) into shards with DALI indexes.

    Valid JPEGs are stored byte for byte; truncated files are repaired, other formats,
    CMYK/grayscale and EXIF-rotated JPEGs become RGB JPEGs, unreadable files are rejected.
    An interrupted run resumes when run again.
    """
    from shards.config import ShardConfig
    from shards.writer import pack

    cfg = ShardConfig(
        shard_size=shard_size,
        short_side=short_side or None,
        workers=workers,
        labeled=labeled,
        force=force,
    )
    out = out if out is not None else paths.shards_for(src)
    manifest = pack(Path(src), out, cfg)
    _echo_summary(manifest, out)


def _echo_summary(manifest: dict, out: Path) -> None:
    """The final summary: totals, then every repaired, rejected and skipped file by name."""
    skipped = manifest.get("skipped", [])  # absent from manifests of older versions
    click.echo(
        f"{manifest['num_samples']} images in {len(manifest['shards'])} shards -> {out} "
        f"({len(manifest['classes'])} classes; {len(manifest['repaired'])} repaired, "
        f"{len(manifest['converted'])} converted, {manifest['resized']} downscaled, "
        f"{len(manifest['rejected'])} rejected, {len(skipped)} skipped)"
    )
    for kind, entries in (("repaired", manifest["repaired"]), ("rejected", manifest["rejected"]),
                          ("skipped", skipped)):  # fmt: skip
        for entry in entries:
            click.echo(f"{kind}: {entry['path']}: {entry['reason']}")
