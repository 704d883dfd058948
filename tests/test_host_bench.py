"""`engine bench --stages host`: the host feeder's rows, its baseline, and the ceiling note."""

from __future__ import annotations

import json
import os

import numpy as np
from click.testing import CliRunner

from bench import host_bench
from bench.suite import COLUMNS, make_row
from engine.cli import main
from shards.decode.catalog import load_catalog
from shards.decode.dali import prepare_batch


def test_old_feeder_baseline_feeds_the_same_bytes_and_eval_view(tmp_path):
    shard_dir = host_bench.make_host_shards(tmp_path / "s", n_images=60, shard_size=25)
    catalog = load_catalog(shard_dir)
    fds: dict = {}
    for positions in (range(0, 25), range(25, 60)):
        old = host_bench.old_prepare(catalog, fds, positions, seed=0, views=2)
        new = prepare_batch(catalog, positions, seed=0, views=2)
        assert [a.tobytes() for a in old[0]] == [b.tobytes() for b in new[0]]
        for column in range(1, 6):  # eval w, h, then view 0's start, shape, flip
            assert np.array_equal(np.stack(old[column]), new[column]), column
        assert len(old) == len(new) == 1 + 2 + 3 * 2
    for fd in fds.values():
        os.close(fd)


def test_ceiling_is_the_slowest_host_rate():
    rows = [make_row("host", "feed views=1", 50_000.0), make_row("host", "feed views=2", 30_000.0),
            make_row("host", "store write views=1", 40_000.0)]  # fmt: skip
    host_bench._note_ceilings(rows)
    assert "1 view(s): 40,000 img/s" in rows[0]["note"]
    assert "2 view(s): 30,000 img/s" in rows[1]["note"]
    assert rows[2]["note"] is None


def test_engine_bench_host_rows(tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["bench", "--stages", "host", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [(r["stage"], r["backend"]) for r in rows] == [
        ("host", "feed views=1"),
        ("host", "feed views=2"),
        ("host", "store write views=1"),
    ]
    for row in rows:
        assert set(row) == set(COLUMNS)
    store = rows.pop()
    assert store["baseline"] == "zarr write_chunk, 1 thread" and "GB/s" in store["note"]
    for row in rows:
        assert row["baseline"] == host_bench.OLD_FEEDER
        assert row["images_per_s"] > 0 and row["baseline_images_per_s"] > 0
        assert row["ratio"] == round(row["images_per_s"] / row["baseline_images_per_s"], 2)
        assert row["note"].startswith("features-pass ceiling from the host side")
    assert "feed views=2" in result.output and "ceiling" in result.output
