"""The whole `engine features` pass: shards -> decode -> frozen trunk -> Zarr store.

    extract("work/shards/train", "work/features/train.zarr", FeatureConfig(depth=2))
    torchrun --nproc-per-node 8 -m engine.cli features work/shards/train   # one store, 8 GPUs

Under torchrun, rank r decodes and writes the shards s with s % W == r; store chunks divide the
shard size, so no two ranks write the same chunk. Rank 0 creates (or validates, to resume) the
store before the others open it, and marks it complete after every rank is done.

Resuming: chunks already recorded in `<out>.progress/` are not recomputed (their batches are
still decoded, since the decoders stream whole shards). `force` starts over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from engine.errors import UserError
from engine.faults import fault_point
from engine.lock import locks_output
from engine.outputs import claim_output_dir
from features.chunks import ChunkAssembler
from features.config import FeatureConfig
from features.distributed import DistContext
from features.meta import MetaCache
from features.provenance import source_record, stale_keys
from features.store import STORE_OUTPUT, FeatureStore, StoreSpec, open_store, remove_store
from features.threads import thread_budget

log = logging.getLogger(__name__)

MAX_CHUNK_N = 256  # 256 rows = 19.7 MB of tokens per view: measured fastest (see store.py)


def default_chunk_n(shard_size: int) -> int:
    """Largest divisor of `shard_size` that is at most MAX_CHUNK_N (1024 -> 256, 1000 -> 250)."""
    return max(d for d in range(1, min(shard_size, MAX_CHUNK_N) + 1) if shard_size % d == 0)


@locks_output("out", what="feature store")
def extract(
    shard_dir,
    out,
    cfg: FeatureConfig,
    *,
    clip_loader: Callable | None = None,
    loader_factory: Callable | None = None,
) -> Path:
    """Write (or resume, or reuse) the feature store of `shard_dir` at `out`.

    Args:
        shard_dir: folder written by `engine shard`.
        out: the `.zarr` store to write.
        cfg: depth, views, weights, batch size, backend, ...
        clip_loader: `(weights, device) -> LoadedClip`; default `features.model.load_clip`
            (tests inject tiny models).
        loader_factory: `shards.decode.make_loader` or a stand-in with its signature.

    Returns:
        `out`, a complete store.
    """
    from shards.format import open_shards

    shard_dir, out = Path(shard_dir), Path(out)
    shard_set = open_shards(shard_dir)  # the manifest, read and checked once for every reader
    # A folder of the user's (or the shards themselves) is refused before the model loads.
    claim_output_dir(out, STORE_OUTPUT, create=False)
    manifest = shard_set.manifest
    ctx = DistContext.from_env(cfg.device)
    try:
        clip = _load(clip_loader, cfg.weights, ctx.device)
        spec = _store_spec(shard_dir, manifest, cfg, clip)
        state = ctx.on_rank0(lambda: _prepare_store(out, spec, cfg.force))
        if state == "complete":
            return out
        ctx.barrier()
        store = FeatureStore.open_for_writing(out)
        fallbacks = _run(shard_set, store, cfg, clip, ctx, loader_factory or _make_loader)
        all_fallbacks = sorted(k for keys in ctx.gather(fallbacks) for k in keys)
        ctx.barrier()
        ctx.on_rank0(lambda: _finish(store, all_fallbacks))
        ctx.barrier()
        return out
    finally:
        ctx.close()


def _load(clip_loader, weights: str, device):
    if clip_loader is None:
        from features.model import load_clip

        clip_loader = load_clip
    return clip_loader(weights, device)


def _make_loader(shard_dir, **kwargs):
    from shards.decode import make_loader

    return make_loader(shard_dir, **kwargs)


def _store_spec(shard_dir: Path, manifest: dict, cfg: FeatureConfig, clip) -> StoreSpec:
    from shards.decode import PREPROCESS

    shard_size = int(manifest["shard_size"])
    chunk_n = cfg.chunk_n or default_chunk_n(shard_size)
    if shard_size % chunk_n:
        raise UserError(
            f"chunk_n {chunk_n} does not divide the shard size {shard_size} of {shard_dir}; "
            f"pick a divisor (default {default_chunk_n(shard_size)})"
        )
    visual = clip.model.visual
    return StoreSpec(
        n=int(manifest["num_samples"]),
        chunk_n=chunk_n,
        depth=cfg.depth,
        views=cfg.views if cfg.depth >= 1 else 1,  # depth 0 keeps only view 0's embedding
        classes=list(manifest["classes"]),
        weights=dict(clip.weights_info),
        preprocess=PREPROCESS,
        model=clip.model_name,
        token_shape=(visual.positional_embedding.shape[0], visual.transformer.width),
        embed_dim=visual.output_dim,
        compressor=cfg.compressor,
        source=source_record(shard_dir, manifest),
    )


def _prepare_store(out: Path, spec: StoreSpec, force: bool) -> str:
    """Create the store, or keep a compatible one: "complete", "resume" or "new"."""
    if force or not (out / "zarr.json").is_file():
        FeatureStore.create(out, spec)
        return "new"
    try:
        existing = open_store(out, model=None, require_complete=False)
    except UserError:
        remove_store(out)  # not a store we can resume (half-created): start over
        FeatureStore.create(out, spec)
        return "new"
    differs = stale_keys(existing.attrs, spec.attrs())  # the one staleness rule
    same_shape = existing.n == spec.n and existing.chunk_n == spec.chunk_n
    if existing.complete and not differs and existing.depth >= spec.depth:
        log.info("%s is complete (depth %d); nothing to do", out, existing.depth)
        return "complete"
    if existing.complete or differs or not same_shape or existing.depth != spec.depth:
        what = ", ".join(differs) or "depth/size"
        raise UserError(
            f"{out} exists with other settings ({what} differ); pass --force to overwrite it "
            "or choose another --out"
        )
    log.info(
        "resuming %s: %d of %d chunks done", out, len(existing.done_chunks()), existing.num_chunks
    )
    return "resume"


def _run(shard_dir, store: FeatureStore, cfg: FeatureConfig, clip, ctx, loader_factory) -> list:
    """Decode, compute and write this rank's chunks; returns keys the decoder had to repair."""
    from features.runner import TrunkRunner

    runner = TrunkRunner(
        clip.model.visual,
        cfg.depth,
        ctx.device,
        compile=cfg.compile and ctx.device.type == "cuda",
        keep_tokens=cfg.depth >= 1,
    )
    assembler = ChunkAssembler(store, MetaCache(shard_dir), store.done_chunks())
    # Decode threads get the cores the store writers, feeder and this loop leave them.
    workers = cfg.workers if cfg.workers is not None else thread_budget().decode
    loader = loader_factory(
        shard_dir,
        backend=cfg.backend,
        batch_size=cfg.batch_size,
        views=store.views,
        seed=cfg.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
        device=ctx.device,
        workers=workers,
        shard_ids=shards_to_decode(shard_dir, store),
    )
    start, computed = time.perf_counter(), 0
    bar = tqdm(total=len(loader), unit="img", desc="features", disable=not ctx.is_main)
    try:
        for index, (embed, tokens) in runner.overlapped(_needed(loader, assembler, bar)):
            assembler.add(index, embed, tokens)
            computed += len(index)
            fault_point("features-batch")
    except BaseException:  # Ctrl-C included: keep the chunks already queued for writing
        assembler.close()
        raise
    finally:
        bar.close()
    assembler.finish()
    seconds = time.perf_counter() - start
    log.info(
        "rank %d: %d images in %.1f s (%.0f img/s)",
        ctx.rank,
        computed,
        seconds,
        computed / max(seconds, 1e-9),
    )
    return list(getattr(loader, "fallback_keys", []))


def _needed(loader, assembler: ChunkAssembler, bar):
    """`(index, images)` of the batches with rows still to compute (resume skips the rest)."""
    for batch in loader:
        index = batch.index.numpy()  # (B,)
        bar.update(len(index))
        if assembler.needs(index):
            yield index, batch.images


def shards_to_decode(shard_dir, store: FeatureStore) -> list[int]:
    """Shards with at least one chunk not yet written: a resumed run decodes only these.

    Chunks never straddle shards (chunk_n divides shard_size), so a shard is done exactly when
    every chunk inside its rows is.
    """
    from shards.reader import shard_files

    done = store.done_chunks()
    todo = []
    for s, shard in enumerate(shard_files(shard_dir)):
        first = shard.offset // store.chunk_n
        last = (shard.offset + shard.count - 1) // store.chunk_n
        if any(c not in done for c in range(first, last + 1)):
            todo.append(s)
    return todo


def _finish(store: FeatureStore, fallbacks: list[str]) -> None:
    store.group.attrs["decode_fallbacks"] = fallbacks  # JPEGs DALI failed and Pillow decoded
    store.mark_complete()
