"""The decode benchmark runs end to end on generated shards and reports every backend."""

from __future__ import annotations

import torch

import shards.decode as decode
from bench import decode_bench


def test_decode_bench_reports_each_backend_and_the_baseline():
    rows = decode_bench.run(
        n_images=40, backends=("dali-gpu", "dali-cpu", "pil"), batch_size=16, workers=1, repeats=1
    )
    by_name = {r["backend"]: r for r in rows}
    baseline = rows[0]
    assert baseline["backend"].startswith("baseline") and baseline["vs_baseline"] == 1.0
    measured = [r for r in rows if "images_per_s" in r]
    assert all(r["images"] == 40 and r["images_per_s"] > 0 for r in measured)
    assert "pil" in by_name and "images_per_s" in by_name["pil"]
    assert ("images_per_s" in by_name["dali-cpu"]) == decode.HAS_DALI
    if not torch.cuda.is_available():
        assert "CUDA" in by_name["dali-gpu"]["skipped"]
    table = decode_bench.format_table(rows)
    assert all(r["backend"] in table for r in rows)
