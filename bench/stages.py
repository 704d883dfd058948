"""The stage functions of `bench.suite`: call a stage module's `run`, normalise its rows.

Each function reads sizes from `ctx.settings`, calls `bench.<module>.run(...)` and returns rows
made by `make_row` (engine backend + rate next to its baseline + rate). Training and screening
rates are samples/s, reported in the images/s column (one sample is one image).
"""

from __future__ import annotations

import torch

from bench.suite import BenchContext, make_row, stage, stage_module
from shards.decode import HAS_DALI, default_workers

DECODE_BASELINE = "webdataset+Pillow DataLoader"
DEPTH = 2  # cache depth of the recommended setting (--unfreeze-last 2)


@stage("shard")
def shard_stage(ctx: BenchContext) -> list[dict]:
    """Packing throughput, and the truncation check with DCT scaling vs a full Pillow decode."""
    s = ctx.settings
    rows = stage_module("shard_bench").run(
        n_images=s.n_images, large=2 if s.quick else 4, short_sides=(512,)
    )
    out = []
    for r in rows:
        if r["stage"] == "pack":
            backend = f"engine shard (short side {r['short_side']}, {r['workers']} workers)"
            out.append(make_row("shard", backend, r["pack_img_s"]))
        else:
            out.append(
                make_row(
                    "shard",
                    f"truncation check, draft ({r['input']})",
                    r["check_draft_img_s"],
                    "full Pillow decode",
                    r["check_full_img_s"],
                )
            )
    return out


@stage("decode")
def decode_stage(ctx: BenchContext) -> list[dict]:
    """Every decode backend this machine has vs webdataset + Pillow in a DataLoader."""

    s = ctx.settings
    backends = ("dali-cpu", "pil") if HAS_DALI else ("pil",)
    backends = ("dali-gpu", *backends) if s.gpu else backends
    rows = stage_module("decode_bench").run(
        ctx.shards(), n_images=s.n_images, backends=backends, batch_size=64, repeats=s.repeats
    )
    base = rows[0]["images_per_s"]
    out = []
    for r in rows[1:]:
        if "skipped" in r:
            out.append(make_row("decode", r["backend"], None, note=f"skipped: {r['skipped']}"))
        else:
            out.append(make_row("decode", r["backend"], r["images_per_s"], DECODE_BASELINE, base))
    return out


def _generic_row(stage_name: str, r: dict, note: str | None = None) -> dict:
    """A row of a module whose columns follow the common names (`images_per_s`, `baseline`)."""
    rate = next((r[k] for k in ("images_per_s", "img_s", "samples_per_s") if k in r), None)
    base = r.get("baseline_images_per_s")
    if base is None and rate and r.get("vs_baseline"):
        base = rate / r["vs_baseline"]
    note = f"skipped: {r['skipped']}" if "skipped" in r else note
    return make_row(
        stage_name, str(r.get("backend") or r.get("stage")), rate, r.get("baseline"), base, note
    )


@stage("trunk")
def trunk_stage(ctx: BenchContext) -> list[dict]:
    """The frozen trunk (12 - k blocks) alone vs open_clip's encode_image, one resident batch;
    on CUDA also compiled (`engine features --compile`)."""
    s = ctx.settings

    fb = stage_module("features_bench")
    dev = torch.device(s.device)
    rows = [fb.bench_trunk(ctx.clip(), DEPTH, s.batch_size, dev, s.repeats)]
    if s.gpu:
        rows.append(fb.bench_trunk(ctx.clip(), DEPTH, s.batch_size, dev, s.repeats, compile=True))
    return [_generic_row("trunk", row) for row in rows]


@stage("features")
def features_stage(ctx: BenchContext) -> list[dict]:
    """`engine features` from shards to Zarr vs webdataset + Pillow + open_clip."""
    s = ctx.settings

    row = stage_module("features_bench").bench_features(
        ctx.clip(),
        ctx.model_shards(),
        depth=DEPTH,
        batch_size=s.batch_size,
        workers=default_workers(),
        device=torch.device(s.device),
        repeats=s.repeats,
    )
    return [_generic_row("features", row, note=f"{row['images']} images")]


@stage("train")
def train_stage(ctx: BenchContext) -> list[dict]:
    """Head-only and k = 2 tail training from the cache vs full ViT forward/backward."""
    s = ctx.settings
    tb = stage_module("train_bench")
    clip = ctx.clip().model
    head_n = 1_000_000 // (4 if s.quick else 1) if s.gpu else 40 * s.n_images
    tail_n = 4 * s.n_images if s.gpu else 2 * s.model_images
    head = tb.bench_head(head_n, 1000, 4096, s.repeats, s.device)
    tail = tb.bench_tail(clip, tail_n, 1000, s.batch_size, s.repeats, s.device)
    full = tb.bench_full(clip, 1000, s.batch_size, s.repeats, s.device)["samples_per_s"]
    baseline = "full ViT-B/32 forward+backward"
    return [
        make_row("train", "head k=0", head["samples_per_s"], baseline, full, f"{head_n} samples"),
        make_row("train", "tail k=2", tail["samples_per_s"], baseline, full, f"{tail_n} samples"),
    ]


@stage("screen")
def screen_stage(ctx: BenchContext) -> list[dict]:
    """One screening round on simulated features vs cleanlab (or the bare probe); on a GPU at
    issue 5's size, 300k samples x 1500 classes (target: <= 30 s on one H100)."""
    s = ctx.settings
    if s.gpu:
        sizes = {"num_classes": 1500, "max_per_class": 200, "imbalance": 1.0, "repeats": 1}
    else:
        sizes = {"num_classes": max(10, min(100, s.n_images // 6)), "max_per_class": 40,
                 "repeats": s.repeats}  # fmt: skip
    rows = stage_module("screen_speed").run(**sizes, device=s.device)
    return [
        make_row(
            "screen",
            r["backend"],
            r["samples_per_s"],
            r["baseline"],
            r["baseline_samples_per_s"],
            note=f"{r['samples']} samples, {r['classes']} classes, {r['seconds']:.1f} s",
        )
        for r in rows
    ]


@stage("predict")
def predict_stage(ctx: BenchContext) -> list[dict]:
    """`engine predict` from shards with the merged model, and from a k = 2 cached store."""
    s = ctx.settings
    rows = stage_module("predict_bench").run(
        ctx.model_shards(),
        ctx.clip(),
        n_images=s.model_images,
        batch_size=s.batch_size,
        repeats=s.repeats,
        device=s.device,
    )
    return [
        make_row(
            "predict",
            r["backend"],
            r["images_per_s"],
            r["baseline"],
            r["baseline_images_per_s"],
            note=f"{r['images']} images",
        )
        for r in rows
    ]


@stage("host")
def host_stage(ctx: BenchContext) -> list[dict]:
    """The DALI path's host feeder at 1 and 2 views vs the per-sample feeder it replaced;
    needs no GPU and no DALI (it times batch preparation alone)."""
    return stage_module("host_bench").host_rows(ctx)
