"""`engine predict`: class predictions for a test folder, shards or a feature store.

    engine predict data/test --model work/runs/latest
    engine predict work/features/test.zarr --model work/runs/exp1 --out pred_results.csv

Writes `pred_results.csv` (`name.jpg, 0042` per input file, no header) and
`pred_results.zip`; the work is `heads.predict.predict_source`. A file that cannot be read
at all still gets a row: the fallback class (the most frequent training class), named in a
warning.
"""

from __future__ import annotations

from pathlib import Path

import click

from engine import paths
from engine.commands.options import BATCH_SIZE_RANGE, deterministic_option
from features.config import DEVICES  # light: dataclasses only
from shards.decode import BACKENDS  # light: no torch until a loader is made


@click.command("predict")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "model_dir", type=click.Path(exists=True, path_type=Path),
              default=paths.LATEST_RUN, show_default=True, help="Run folder holding model.pt.")  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=paths.PREDICTIONS,
              show_default=True, help="CSV to write (zip beside it).")  # fmt: skip
@click.option("--batch-size", type=BATCH_SIZE_RANGE, default=64, show_default=True)
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="Image decoding: DALI on the GPU, DALI on the CPU, or Pillow.")  # fmt: skip
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Where the model runs (auto: CUDA when present).")  # fmt: skip
@click.option("--shards", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="For a feature store SRC: the shards it was made from, when they have moved "
              "(checked by fingerprint); their manifest names the unreadable files, which get "
              "the fallback row. [default: the folder the store recorded]")  # fmt: skip
@deterministic_option
def command(src: Path, model_dir: Path, out: Path, batch_size: int, backend: str, device: str,
            shards: Path | None, deterministic: bool | None):  # fmt: skip
    """Predict a class for every file of SRC (images, shards or a feature store)."""
    from heads.numerics import apply_numerics
    from heads.predict import predict_source

    apply_numerics(deterministic=deterministic is not False)

    count, csv_path, zip_path = predict_source(
        model_dir, src, out, batch_size=batch_size, backend=backend, device=device, shards=shards
    )
    click.echo(f"{count} predictions: {csv_path} and {zip_path}")
