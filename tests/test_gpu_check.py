"""bench.gpu_check: the dry run covers every part on the CPU, reports after each part, stops
loudly without CUDA in a full run; lines compare values with targets exactly."""

from __future__ import annotations

import json
import subprocess
import sys
import types

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
    assert by_name["features pass / baseline"]["target"] == 4.0
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
    assert failed["note"] == f"-m gpu, {len(files)} files: 1 failed, 2 passed, 4 skipped in 9.0s"


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
