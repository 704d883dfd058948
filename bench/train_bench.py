"""Training throughput: head-only and k = 2 tail training from the cache vs full fine-tuning.

    python -m bench.train_bench                 # CPU-sized defaults
    python -m bench.train_bench --device cuda --head-n 1000000 --tail-n 20000 --batch 1024

Rows (samples/s, median over epochs/steps, the first one excluded as warm-up):
    head k=0        `heads.trainer.fit` on N x 512 embeddings
    tail k=2        `fit` on cached (N, 50, 768) tokens, 2 blocks + ln_post + proj + head
    full baseline   what a user would write: ViT-B/32 forward + backward + AdamW on images
The tail row's `vs_baseline` is its speed over the baseline's (decode excluded for both).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch

from features.model import load_clip
from features.store import FeatureStore
from heads.config import TrainConfig
from heads.trainer import fit


def _data(n: int, classes: int, depth: int, seed: int = 0):

    rng = np.random.default_rng(seed)
    embed = rng.standard_normal((n, 512)).astype(np.float32)
    embed /= np.linalg.norm(embed, axis=1, keepdims=True)
    tokens = rng.standard_normal((1, n, 50, 768)).astype(np.float16) if depth else None
    return FeatureStore.from_arrays(
        embed=embed.astype(np.float16),
        labels=rng.integers(0, classes, n),
        classes=[f"{k:04d}" for k in range(classes)],
        tokens=tokens,
        depth=depth,
    )


def _median_rate(history: list[dict]) -> float:
    rates = [h["samples_per_s"] for h in history[1:]] or [history[0]["samples_per_s"]]
    return statistics.median(rates)


def bench_head(n: int, classes: int, batch: int, repeats: int, device: str) -> dict:

    cfg = TrainConfig(epochs_lp=repeats + 1, batch_size=batch, device=device)
    model = fit(_data(n, classes, 0), cfg)
    return {
        "stage": "head k=0",
        "samples": n,
        "batch": batch,
        "samples_per_s": _median_rate(model.history),
    }


def bench_tail(clip, n: int, classes: int, batch: int, repeats: int, device: str) -> dict:

    cfg = TrainConfig(
        unfreeze_last=2, epochs_lp=0, epochs_ft=repeats + 1, batch_size=batch, device=device
    )
    model = fit(_data(n, classes, 2), cfg, clip=clip)
    return {
        "stage": "tail k=2",
        "samples": n,
        "batch": batch,
        "samples_per_s": _median_rate(model.history),
    }


class FullBaseline:
    """What a user would write to fine-tune every block: ViT forward + backward + AdamW.

    It trains a copy of `clip.visual` with every parameter trainable, whatever another stage
    did to the shared model (a frozen shared model once made this row train the head only).
    """

    def __init__(self, clip, classes: int, batch: int, device: str):

        self.dev = torch.device(device)
        self.model = copy.deepcopy(clip.visual).to(self.dev).train().requires_grad_(True)
        self.head = torch.nn.Linear(self.model.output_dim, classes).to(self.dev)
        params = list(self.model.parameters()) + list(self.head.parameters())
        self.opt = torch.optim.AdamW(params, lr=1e-5, fused=self.dev.type == "cuda")
        self.images = torch.randn(batch, 3, 224, 224, device=self.dev)  # (B, 3, 224, 224)
        self.labels = torch.randint(0, classes, (batch,), device=self.dev)  # (B,)

    def step(self) -> float:
        """One optimiser step on the resident batch; returns the loss."""
        ctx = (
            torch.autocast("cuda", torch.bfloat16)
            if self.dev.type == "cuda"
            else torch.autocast("cpu", enabled=False)
        )
        with ctx:
            logits = self.head(self.model(self.images))  # (B, classes)
            loss = torch.nn.functional.cross_entropy(logits.float(), self.labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def bench_full(clip, classes: int, batch: int, repeats: int, device: str) -> dict:
    """Full fine-tuning from (already decoded) images: every block forward + backward."""
    baseline = FullBaseline(clip, classes, batch, device)
    times = []
    for _ in range(repeats + 1):
        if baseline.dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        baseline.step()
        if baseline.dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    rate = batch / statistics.median(times[1:])
    return {
        "stage": "full baseline",
        "samples": batch * repeats,
        "batch": batch,
        "samples_per_s": rate,
    }


def run(
    head_n: int = 100_000,
    tail_n: int = 512,
    classes: int = 1000,
    batch: int = 256,
    full_batch: int = 32,
    repeats: int = 3,
    device: str = "cpu",
) -> list[dict]:
    """All three rows; the tail row carries `vs_baseline` (its speed / the baseline's)."""

    clip = load_clip("random").model  # the real architecture; speed does not need weights
    rows = [
        bench_head(head_n, classes, max(batch, 4096), repeats, device),
        bench_tail(clip, tail_n, classes, batch, repeats, device),
        bench_full(clip, classes, full_batch, repeats, device),
    ]
    rows[1]["vs_baseline"] = rows[1]["samples_per_s"] / rows[2]["samples_per_s"]
    for row in rows:
        row["device"] = device
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--head-n", type=int, default=100_000)
    parser.add_argument("--tail-n", type=int, default=512)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--full-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = run(
        args.head_n,
        args.tail_n,
        args.classes,
        args.batch,
        args.full_batch,
        args.repeats,
        args.device,
    )
    print(f"{'stage':<14} {'device':<6} {'batch':>6} {'samples/s':>12} {'vs baseline':>12}")
    for r in rows:
        ratio = f"{r['vs_baseline']:.1f}x" if "vs_baseline" in r else ""
        print(
            f"{r['stage']:<14} {r['device']:<6} {r['batch']:>6} {r['samples_per_s']:>12,.0f} {ratio:>12}"
        )


if __name__ == "__main__":
    main()
