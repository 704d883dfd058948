"""`engine features [SHARDS]`: run the frozen CLIP trunk once and cache its tokens in Zarr.

engine features                                   # work/shards/train -> work/features/train.zarr
engine features work/shards/test --unfreeze-last 0 --weights /data/ViT-B-32.pt
torchrun --no-python --nproc-per-node 8 engine features --unfreeze-last 2 --views 4
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from engine import paths
from engine.commands.options import BATCH_SIZE_RANGE, deterministic_option
from shards.decode import BACKENDS  # light: no torch until a loader is made


@click.command(name="features")
@click.argument("shards", type=click.Path(path_type=Path), default=paths.SHARDS_TRAIN)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Feature store to write. [default: work/features/<name of SHARDS>.zarr]",
)
@click.option(
    "--unfreeze-last",
    "depth",
    type=click.IntRange(0, 12),
    default=2,
    show_default=True,
    help="Blocks the trainer will fine-tune; the cache stores what enters them.",
)
@click.option(
    "--views",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Cached views per image: view 0 is the eval crop, views 1.. seeded random crops + flips.",
)
@click.option(
    "--weights",
    default="openai",
    show_default=True,
    help="'openai' (downloaded and cached by open_clip), a checkpoint path, or 'random'.",
)
@click.option("--batch-size", type=BATCH_SIZE_RANGE, default=256, show_default=True)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="JPEG decoder: DALI on the GPU, DALI on the CPU, or Pillow.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Decode threads/processes. [default: all cores, at most 16]",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of views 1..")
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the trunk (CUDA).")
@click.option("--force", is_flag=True, help="Overwrite an existing or partial store.")
@deterministic_option
def command(
    shards, out, depth, views, weights, batch_size, backend, workers, seed, device, compile_, force,
    deterministic,
) -> None:  # fmt: skip
    """Decode SHARDS, run the frozen trunk of CLIP ViT-B/32 and write the feature store.

    An interrupted run resumes from its last finished chunk when run again. Under
    `torchrun --nproc-per-node N` every rank takes its share of the shards.
    """
    from features.config import FeatureConfig
    from features.extract import extract
    from features.gpu_env import gpu_visibility_problem
    from heads.numerics import apply_numerics

    apply_numerics(deterministic=deterministic is not False)  # before the first CUDA kernel

    if device != "cpu" and (problem := gpu_visibility_problem()):
        click.echo(f"warning: {problem}", err=True)  # else a silent run on the CPU
    cfg = FeatureConfig(
        depth=depth,
        views=views,
        weights=weights,
        batch_size=batch_size,
        backend=backend,
        workers=workers,
        seed=seed,
        device=device,
        compile=compile_,
        force=force,
    )
    out = out if out is not None else paths.store_for(shards)
    path = extract(shards, out, cfg)
    if os.environ.get("RANK", "0") == "0":  # one line per job, not per torchrun rank
        click.echo(f"feature store -> {path} (depth {depth}, {views} view(s), weights {weights})")
