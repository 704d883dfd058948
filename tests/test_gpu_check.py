"""bench.gpu_check: the dry run covers every part on the CPU, reports after each part, stops
loudly without CUDA in a full run; lines compare values with targets exactly."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from bench import gpu_check, gpu_check_data, gpu_check_parts
from bench.gpu_check_parts import CheckSizes, check_line


def fake_pytest(monkeypatch, stdout: str, returncode: int) -> list[list[str]]:
    """Replace the child `pytest -m gpu` (its own run is too slow for the fast suite)."""
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, returncode, stdout=stdout, stderr="")

    monkeypatch.setattr(gpu_check_parts.subprocess, "run", run)
    return calls


def test_check_line_compares_with_its_target():
    assert check_line("t", "a", 40_000.0, "img/s", 40_000)["passed"] is True
    assert check_line("t", "a", 39_999.0, "img/s", 40_000)["passed"] is False
    assert check_line("s", "b", 30.5, "s", 30.0, op="<=")["passed"] is False
    assert check_line("s", "b", None, "s", 30.0, op="<=")["passed"] is None
    assert check_line("s", "c", 3.0, "x")["op"] is None


def test_dry_run_reports_every_part_on_the_cpu(tmp_path, monkeypatch):
    calls = fake_pytest(monkeypatch, "3 passed, 2 skipped, 5 deselected in 1.2s\n", 0)
    out = tmp_path / "check.json"
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["complete"]
    assert report["command"] == f"python -m bench.gpu_check --dry-run --out {out}"
    parts = list(dict.fromkeys(line["part"] for line in report["lines"]))
    assert parts == [*gpu_check.PARTS, "total"]
    by_name = {line["name"]: line for line in report["lines"]}
    names = list(by_name)
    assert "trunk 10/12 fp32 eager, batch 2" in names and "tail k=2, batch 8" in names
    assert "head-only, batch 512" in names and "screening round, 200 x 10" in names
    assert by_name["folder-mixture stage, 200 x 10"]["target"] == 30.0
    assert by_name["folder-mixture stage, 200 x 10"]["part"] == "mixture"
    assert by_name["head-only, batch 512"]["target"] is None  # launch-bound: exit 0 reachable
    assert by_name["head-only, batch 128"]["target"] == 2_000_000
    assert by_name["features pass / baseline"]["target"] == 4.0
    assert "features pass (torchvision, depth 2), steady" in names
    for stage in ("decode only (torchvision)", "trunk only, batch 8", "store write only (views=1)"):
        assert by_name[stage]["value"] > 0, stage
    assert by_name["fine-tune epoch, 32 x V=1 zero tokens completed"]["value"] == 1.0
    assert by_name["gpu tests passed"]["value"] == 3.0 and by_name["gpu tests failed"]["passed"]
    for name in names:
        if by_name[name]["unit"] in ("img/s", "samples/s", "x", "s"):
            assert by_name[name]["value"] > 0, name
    assert calls[0][:3] == [sys.executable, "-m", "pytest"] and "-m" in calls[0][3:]


def test_a_broken_part_is_one_failed_line_and_the_rest_still_runs(tmp_path, monkeypatch):
    seen = []

    def broken(sizes):
        seen.append(json.loads(out.read_text())["lines"][-1]["part"])  # written after cuda
        raise RuntimeError("boom")

    monkeypatch.setitem(gpu_check.PARTS, "trunk", broken)
    monkeypatch.setitem(
        gpu_check.PARTS, "screen", lambda s: [check_line("screen", "r", 1.0, "s", 30, "<=")]
    )
    out = tmp_path / "check.json"
    assert gpu_check.main(["--dry-run", "--out", str(out), "--parts", "cuda,trunk,screen"]) == 1
    lines = json.loads(out.read_text())["lines"]
    assert seen == ["cuda"]
    assert [(ln["part"], ln["name"]) for ln in lines] == [
        ("cuda", "device: no CUDA device"), ("trunk", "part ran"), ("screen", "r"),
        ("total", "whole check"),
    ]  # fmt: skip
    assert lines[1]["note"] == "error: RuntimeError: boom" and lines[1]["passed"] is False


def test_a_full_check_without_cuda_stops_after_saying_so(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check_parts.torch.cuda, "is_available", lambda: False)
    monkeypatch.setitem(gpu_check.PARTS, "trunk", lambda s: pytest.fail("ran without CUDA"))
    out = tmp_path / "check.json"
    assert gpu_check.main(["--out", str(out), "--parts", "cuda,trunk"]) == 2
    report = json.loads(out.read_text())
    assert report["no_cuda"] and not report["complete"]
    assert [ln["part"] for ln in report["lines"]] == ["cuda", "total"]
    assert report["lines"][0]["passed"] is False


def test_pytest_part_counts_failures(monkeypatch):
    calls = fake_pytest(monkeypatch, "F..\n1 failed, 2 passed, 4 skipped in 9.0s\n", 1)
    failed, passed = gpu_check_parts.part_pytest(CheckSizes())
    assert failed["value"] == 1.0 and failed["passed"] is False
    assert passed["value"] == 2.0 and passed["note"].startswith("4 skipped")
    files = gpu_check_parts.gpu_test_files()
    names = [f.rsplit("/", 1)[-1] for f in files]
    assert "test_runner.py" in names and "test_gpu_check.py" not in names
    assert all(f.startswith(str(gpu_check_parts.TESTS)) for f in files)  # any working folder
    assert calls[0][-len(files) - 2 :] == ["-m", "gpu", *files]
    assert failed["note"] == (
        f"-m gpu, {len(files)} files: 1 failed, 2 passed, 4 skipped in 9.0s (pytest exit 1)"
    )


def test_memory_plan_goes_through_the_adapter(monkeypatch):
    asked = []

    def plan_tokens(num_samples, views, *, gpu_free_bytes, host_free_bytes):
        asked.append((num_samples, views, gpu_free_bytes, host_free_bytes))
        return f"placement for V={views}"

    monkeypatch.setitem(sys.modules, "heads.memory", types.SimpleNamespace(plan_tokens=plan_tokens))
    got = gpu_check_data.plan_tokens_adapter(300_000, 4, gpu_free_bytes=8, host_free_bytes=9)
    assert got == "placement for V=4" and asked == [(300_000, 4, 8, 9)]
    monkeypatch.setitem(sys.modules, "heads.memory", None)  # import fails: planner absent
    assert gpu_check_data.plan_tokens_adapter(1, 1, gpu_free_bytes=0, host_free_bytes=0) is None


def _report(lines, dry=False):
    return {"dry_run": dry, "lines": lines}


def test_a_skipped_target_line_fails_and_every_target_met_exits_0():
    met = check_line("t", "rate", 50_000.0, "img/s", 40_000)
    skipped = check_line("f", "features", None, "img/s", 15_000, note="skipped: no DALI")
    assert gpu_check.exit_status(_report([met])) == 0
    assert gpu_check.exit_status(_report([met, skipped])) == 1
    assert gpu_check.exit_status(_report([met, skipped], dry=True)) == 1  # dry runs too
    missed = check_line("t", "rate", 1.0, "img/s", 40_000)
    assert gpu_check.exit_status(_report([missed])) == 1
    assert gpu_check.exit_status(_report([missed], dry=True)) == 0  # tiny sizes: not enforced
    assert gpu_check.exit_status(_report([check_line("t", "info", None, "plan")])) == 0


@pytest.mark.parametrize(
    ("stdout", "code"),
    [("no tests ran in 0.1s\n", 5), ("4 skipped in 0.2s\n", 0), ("", 2)],
)
def test_pytest_part_fails_on_nothing_collected_or_all_skipped(monkeypatch, stdout, code):
    fake_pytest(monkeypatch, stdout, code)
    lines = gpu_check_parts.part_pytest(CheckSizes())
    assert gpu_check.exit_status(_report(lines)) == 1


def test_out_defaults_under_dollar_out_and_the_table_follows_every_part(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setitem(gpu_check.PARTS, "trunk", lambda s: [check_line("trunk", "r", 1.0, "x")])
    monkeypatch.setitem(gpu_check.PARTS, "train", lambda s: [check_line("train", "q", 2.0, "x")])
    assert gpu_check.main(["--dry-run", "--parts", "cuda,trunk,train"]) == 0
    assert json.loads((tmp_path / "gpu_check.json").read_text())["complete"]
    printed = capsys.readouterr().out
    assert printed.count("engine GPU acceptance on") == 4  # after each of 3 parts, and at the end
    assert f"report -> {tmp_path / 'gpu_check.json'}" in printed


def test_trunk_uses_one_runner_per_mode_compiled_with_static_shapes(monkeypatch):
    import features.runner as runner_mod

    made, compiled = [], []
    real = runner_mod.TrunkRunner

    class Counting(real):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("compile"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(runner_mod, "TrunkRunner", Counting)
    sizes = CheckSizes.dry_run()
    lines = gpu_check_parts.part_trunk(sizes)
    assert made == [False] and len(lines) == len(sizes.trunk_batches)
    monkeypatch.setattr(runner_mod.torch, "compile", lambda m, **kw: compiled.append(kw) or m)
    runner_mod.TrunkRunner(sizes.clip().model.visual, 2, runner_mod.torch.device("cpu"),
                           compile=True)  # fmt: skip
    assert compiled == []  # the CPU never compiles; on CUDA: dynamic=False (next test)


def test_compiled_trunk_asks_for_static_shapes(monkeypatch):
    import features.runner as runner_mod

    source = Path(runner_mod.__file__).read_text()
    assert "torch.compile(self.trunk, dynamic=False)" in source


def test_memory_part_hands_the_trainer_zeros_without_filling_them(monkeypatch):
    seen = {}

    def fake_fit_rate(data, sizes, clip=None, **cfg):
        seen["tokens"] = data.tokens
        return 1.0

    monkeypatch.setattr(gpu_check_data, "_fit_rate", fake_fit_rate)
    gpu_check_data.part_memory(CheckSizes.dry_run())
    tokens = seen["tokens"]
    assert tokens.shape[:2] == (1, 32) and not tokens.any()
    assert tokens.strides[1] == 0  # one row seen N times: nothing to fill or copy on the host


def test_steady_rate_leaves_the_warm_up_out():
    loader = gpu_check_data.TimedLoader([])
    loader.times = [0.0, 10.0, 11.0, 12.0, 13.0]  # a slow first batch (start-up)
    loader.counts = [100] * 5
    assert loader.steady_rate(1) == 300 / 3.0
    assert loader.steady_rate(4) is None


def test_the_gpu_decode_line_fails_when_the_cpu_decoded(monkeypatch, tmp_path):
    sizes = CheckSizes.dry_run()
    monkeypatch.setattr(gpu_check_data, "make_repeated_shards", lambda *a, **k: tmp_path)
    monkeypatch.setattr(gpu_check_data, "_decode_rate", lambda *a: (100.0, 3.2))
    monkeypatch.setattr(
        gpu_check_data,
        "_features_rate",
        lambda *a: {"steady": 20_000.0, "wall": 9.0, "images": 131_072},
    )
    monkeypatch.setattr(gpu_check_data, "_stage_rates", lambda *a: {"trunk": 1.0, "store": 1.0})
    monkeypatch.setattr(gpu_check_data, "_baseline_rate", lambda *a: 1_000.0)
    gpu = CheckSizes(**{**sizes.__dict__, "device": "cuda"})
    lines = gpu_check_data.features_lines("features", "torchvision", gpu, tmp_path)
    cpu_line = [ln for ln in lines if ln["name"].startswith("host CPU per decoded image")][0]
    assert cpu_line["passed"] is False and cpu_line["target"] == gpu_check_data.GPU_DECODE_CPU_MS


def test_repeated_shards_hold_n_images_in_few_distinct_files(tmp_path):
    from shards.format import open_shards

    out = gpu_check_data.make_repeated_shards(tmp_path, 64, shard_size=16, distinct=2)
    assert open_shards(out).manifest["num_samples"] == 64
    tars = sorted(out.glob("shard-*.tar"))
    assert len(tars) == 4 and tars[0].stat().st_ino == tars[2].stat().st_ino  # hard links


def test_the_check_runs_with_the_engines_numerics(tmp_path, monkeypatch):
    set_before = []
    flags = {"tf32_matmul": True, "deterministic": True}
    fake = types.SimpleNamespace(apply_numerics=lambda: set_before.append(1) or flags)
    monkeypatch.setitem(sys.modules, "heads.numerics", fake)
    monkeypatch.setitem(
        gpu_check.PARTS, "trunk", lambda s: [check_line("trunk", "r", len(set_before), "x")]
    )
    out = tmp_path / "check.json"
    assert gpu_check.main(["--dry-run", "--out", str(out), "--parts", "trunk"]) == 0
    report = json.loads(out.read_text())
    assert report["numerics"] == flags and report["lines"][0]["value"] == 1  # set before parts


def test_jpeg_engine_use_is_read_from_nvidia_smi_dmon():
    import io

    monitor = gpu_check_data.JpegUtilisation.__new__(gpu_check_data.JpegUtilisation)
    monitor.peak = None
    dmon = (
        "# gpu    sm   mem   enc   dec   jpg   ofa\n# Idx     %     %     %     %     %     %\n"
        "    0    50     3     0     0    37     0\n    0    10     3     0     0    12     0\n"
    )
    monitor._proc = types.SimpleNamespace(stdout=io.StringIO(dmon))
    monitor._read()
    assert monitor.peak == 37.0
