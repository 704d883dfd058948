"""`engine bench` and `bench.suite`: every stage really runs on tiny data; errors become rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from bench import suite
from bench.report import table, write_outputs
from bench.suite import COLUMNS, TITLES, BenchSettings, run_stage, run_suite
from engine.cli import main
from shards.decode import HAS_DALI

ALL_STAGES = ["shard", "decode", "trunk", "features", "train", "screen", "predict"]
# Stages without a ViT forward: seconds on 2 cores, so they run in `make test`; all seven run
# in the slow test (~40 s idle, ~100 s on a loaded 2-core machine).
FAST_STAGES = ["shard", "decode", "screen"]
# Engine backends each stage must report on a CPU (DALI's CPU backend when it is installed).
EXPECTED_BACKENDS = {
    "decode": {"dali-cpu", "pil"} if HAS_DALI else {"pil"},
    "train": {"head k=0", "tail k=2"},
    "screen": {"heads.screen round 0"},
}


TINY = BenchSettings(images=16, quick=True, device="cpu", vit_images=2, vit_batch=2)


@pytest.fixture(scope="module")
def fast_rows(tmp_path_factory):
    """The stages without a ViT forward once on 16 images, one timed repeat."""
    return run_suite(FAST_STAGES, TINY, tmp_path_factory.mktemp("bench"))


def check_rows(rows: list[dict], stages: list[str]) -> None:
    """Common columns, stage order, positive rates, ratio = rate / baseline rate, no errors."""
    assert [r["stage"] for r in rows] == sorted((r["stage"] for r in rows), key=stages.index)
    assert {r["stage"] for r in rows} == set(stages)
    for row in rows:
        assert list(row) == list(COLUMNS)
        assert not (row["note"] or "").startswith("error"), row
        assert row["images_per_s"] > 0, row
        assert row["peak_memory_mb"] > 0, row
        if row["baseline"] is not None:
            assert row["baseline_images_per_s"] > 0, row
            assert row["ratio"] == pytest.approx(
                row["images_per_s"] / row["baseline_images_per_s"], rel=0.01, abs=0.006
            )
    for stage_name, backends in EXPECTED_BACKENDS.items():
        if stage_name in stages:
            assert {r["backend"] for r in rows if r["stage"] == stage_name} == backends
    # Every stage compares itself with a baseline measured in the same run.
    for stage_name in stages:
        assert any(r["baseline"] for r in rows if r["stage"] == stage_name), stage_name


def test_bench_help_lists_options():
    result = CliRunner().invoke(main, ["bench", "--help"])
    assert result.exit_code == 0
    for option in ("--stages", "--images", "--shards", "--out", "--quick", "--device"):
        assert option in result.output


def test_unknown_stage_is_a_user_error(tmp_path):
    result = CliRunner().invoke(main, ["bench", "--stages", "decode,warp", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "'warp'" in result.output and "valid: shard,decode,trunk" in result.output


def test_registered_stages_match_the_cli():
    from engine.commands.bench import STAGE_NAMES

    assert tuple(suite.STAGES) == STAGE_NAMES


def test_fast_stages_report_positive_rates(fast_rows):
    check_rows(fast_rows, FAST_STAGES)
    shard = sorted(r["backend"] for r in fast_rows if r["stage"] == "shard")
    assert shard[0].startswith("engine shard (short side 512, ")
    assert shard[1:] == [
        "truncation check, draft (large 3000x2000)",
        "truncation check, draft (web ~500x375)",
    ]


@pytest.mark.slow
def test_every_stage_reports_positive_rates(tmp_path):
    rows = run_suite(ALL_STAGES, TINY, tmp_path)
    check_rows(rows, ALL_STAGES)
    by_backend = {r["backend"]: r for r in rows}
    assert by_backend["cached store, tail k=2"]["note"] == "8 images"
    assert by_backend["tail k=2"]["note"] == "4 samples"


def test_outputs_schema_and_table(fast_rows, tmp_path):
    payload = write_outputs(fast_rows, tmp_path, command="engine bench", settings={"images": 16})
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["format"] == "engine.bench/1"
    assert saved["columns"] == list(COLUMNS)
    assert saved["rows"] == payload["rows"] == fast_rows
    assert saved["hardware"]["cpu_cores"] >= 1 and "gpu" in saved["hardware"]
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = table(fast_rows).splitlines()
    assert lines[0].split("  ")[0] == "stage" and all(t in lines[0] for t in TITLES)
    assert len(lines) == 2 + len(fast_rows)


def test_failing_stage_becomes_an_error_row(monkeypatch, tmp_path):
    def broken(ctx):
        raise RuntimeError("decoder on fire")

    # the registry refuses a second entry under a name, so the test swaps its table entries
    monkeypatch.setitem(suite.STAGES._items, "decode", broken)
    monkeypatch.setitem(
        suite.STAGES._items, "trunk", lambda ctx: [suite.make_row("trunk", "t", 5.0)]
    )
    rows = run_suite(["decode", "trunk"], BenchSettings(images=16), tmp_path)
    assert rows[0]["stage"] == "decode" and rows[0]["images_per_s"] is None
    assert rows[0]["note"] == "error: RuntimeError: decoder on fire"
    assert rows[1]["stage"] == "trunk" and rows[1]["images_per_s"] == 5.0


def test_missing_stage_module_becomes_an_error_row(monkeypatch, tmp_path):
    def missing(name):
        raise ModuleNotFoundError(f"No module named 'bench.{name}'")

    monkeypatch.setattr(suite, "stage_module", missing)
    from bench import stages

    monkeypatch.setattr(stages, "stage_module", missing)
    from bench.suite import BenchContext

    (row,) = run_stage("screen", BenchContext(BenchSettings(images=16), tmp_path))
    assert row["note"] == "error: ModuleNotFoundError: No module named 'bench.screen_speed'"


def test_cli_writes_json_png_and_prints_one_table(tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        main, ["bench", "--stages", "shard", "--images", "8", "--quick", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "bench.json").read_text())
    assert saved["command"] == f"engine bench --stages shard --images 8 --quick --out {out}"
    assert saved["settings"]["stages"] == ["shard"] and saved["settings"]["device"] == "cpu"
    assert saved["settings"]["images"] == 8
    assert {r["stage"] for r in saved["rows"]} == {"shard"}
    assert all(r["images_per_s"] > 0 for r in saved["rows"])
    assert "images/s" in result.output and "engine shard (short side 512" in result.output
    assert (out / "bench.png").stat().st_size > 0


def test_settings_derive_sizes():
    cpu = BenchSettings()
    assert (cpu.n_images, cpu.model_images, cpu.batch_size, cpu.repeats) == (192, 8, 8, 3)
    quick = BenchSettings(quick=True)
    assert (quick.n_images, quick.model_images, quick.batch_size, quick.repeats) == (48, 4, 4, 1)
    tiny = BenchSettings(images=16, vit_images=2, vit_batch=1)
    assert (tiny.n_images, tiny.model_images, tiny.batch_size) == (16, 2, 1)
    gpu = BenchSettings(device="cuda")
    assert (gpu.n_images, gpu.model_images, gpu.batch_size) == (8192, 8192, 256)
    with pytest.raises(ValueError, match="device"):
        BenchSettings(device="tpu")


def test_partition_timing_times_a_real_partition_of_random_signals():
    from bench.screen_speed import partition_seconds, random_round_inputs
    from heads.screen import ScreenConfig
    from heads.screen.partition import CLEAN, STATES
    from heads.screen.rounds import screen_round

    inputs, fixed, logits = random_round_inputs(300, 7)
    result = screen_round(inputs, ScreenConfig(), fixed, logits)
    # what is timed is a whole partition: every sample gets a state and a (K,) target row
    assert result.state.shape == (300,) and set(np.unique(result.state)) <= set(range(len(STATES)))
    assert result.targets.shape == (300, 7) and np.isfinite(result.targets).all()
    assert (result.state == CLEAN).mean() > 0.5  # signals that mostly agree with the labels
    inputs2, fixed2, logits2 = random_round_inputs(300, 7)
    again = screen_round(inputs2, ScreenConfig(), fixed2, logits2)
    np.testing.assert_array_equal(again.state, result.state)  # same seed, same work timed
    seconds = partition_seconds(300, 7)
    assert 0 < seconds < 60
