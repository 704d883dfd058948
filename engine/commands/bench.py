"""`engine bench`: every stage's images/s next to the plain baseline, measured in one run.

    engine bench                                   # all stages on generated data
    engine bench --stages decode,features --shards work/shards/train
    engine bench --quick --out work/demo/bench     # the demo's short bench

Prints one table (stage, backend, images/s, baseline, baseline images/s, ratio, peak memory)
and writes `bench.json` (rows + hardware + settings) and `bench.png` into --out.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from engine import paths
from engine.errors import UserError
from engine.outputs import OutputKind, claim_output_dir

log = logging.getLogger(__name__)

# `--out`: new, empty, or an earlier bench's folder (engine.outputs; older ones by bench.json).
BENCH_OUTPUT = OutputKind("bench folder", "bench", recognise=lambda d: (d / "bench.json").is_file())
# Kept here, not imported from bench.suite, so `engine bench --help` stays instant.
STAGE_NAMES = ("shard", "decode", "trunk", "features", "train", "screen", "predict", "host")


def parse_stages(text: str) -> list[str]:
    """'decode, train' -> ['decode', 'train']; unknown names fail with the valid ones."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in STAGE_NAMES]
    if unknown or not names:
        raise UserError(
            f"unknown stage(s) {unknown or text!r} in --stages; valid: {','.join(STAGE_NAMES)}"
        )
    return names


def _bench_device(device: str) -> str:
    """ "cpu" or "cuda" (the bench's device type), refusing --device cuda without a GPU."""
    import torch

    from heads.tensors import resolve_device

    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA GPU is visible; use --device cpu or auto")
    return resolve_device(device).type


def _command_line(stages, images, shards, out, quick, device) -> str:
    """The command that re-makes this run, recorded in bench.json."""
    parts = ["engine bench"]
    if stages != ",".join(STAGE_NAMES):
        parts.append(f"--stages {stages}")
    if images is not None:
        parts.append(f"--images {images}")
    if shards is not None:
        parts.append(f"--shards {shards}")
    if quick:
        parts.append("--quick")
    if device != "auto":
        parts.append(f"--device {device}")
    parts.append(f"--out {out}")
    return " ".join(parts)


@click.command("bench")
@click.option(
    "--stages",
    default=",".join(STAGE_NAMES),
    show_default=True,
    help="Comma-separated stages to time; `host` times the DALI path's host feeder alone "
    "(no GPU or DALI needed) and prints the features-pass ceiling it allows.",
)
@click.option(
    "--images",
    type=click.IntRange(8),
    default=None,
    help="Images for the decode-bound stages. [default: 192 on CPU (48 with --quick), 8192 on a GPU]",
)
@click.option(
    "--shards",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Decode your own `engine shard` folder instead of generated images.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=paths.BENCH_OUT,
    show_default=True,
    help="Folder for bench.json and bench.png.",
)
@click.option("--quick", is_flag=True, help="Small sizes, one timed repeat (~40 s on 2 cores).")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
)
def command(stages: str, images, shards, out: Path, quick: bool, device: str) -> None:
    """Time every stage in images/s next to its plain baseline, on this machine."""
    names = parse_stages(stages)
    if shards is not None and not (shards / "manifest.json").exists():
        raise UserError(f"{shards} holds no manifest.json; make shards with `engine shard`")
    claim_output_dir(out, BENCH_OUTPUT)  # bench.json/.png overwrite only an earlier bench's
    from bench.report import table, write_outputs
    from bench.suite import BenchSettings, run_suite

    settings = BenchSettings(
        images=images, quick=quick, device=_bench_device(device), shards=shards
    )
    rows = run_suite(names, settings)
    payload = write_outputs(
        rows,
        out,
        command=_command_line(stages, images, shards, out, quick, device),
        settings={
            "stages": names,
            "images": settings.n_images,
            "model_images": settings.model_images,
            "quick": quick,
            "device": settings.device,
            "shards": str(shards) if shards else None,
        },
    )
    hw = payload["hardware"]
    click.echo(
        f"engine bench on {hw['gpu'] or 'CPU only'} ({hw['cpu_model']}, {hw['cpu_cores']} cores)"
    )
    click.echo(table(rows))
    failed = [r["stage"] for r in rows if (r.get("note") or "").startswith("error")]
    if failed:
        click.echo(f"failed stages (see the log above): {', '.join(failed)}", err=True)
    click.echo(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
