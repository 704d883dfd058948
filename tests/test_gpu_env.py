"""features.gpu_env: a GPU the driver has but torch or DALI cannot use is named in one line."""

from __future__ import annotations

import subprocess

from features import gpu_env
from features.gpu_env import GpuEnv, visibility_problem

SMI = """
| NVIDIA-SMI 550.54.15   Driver Version: 550.54.15   CUDA Version: 12.4     |
"""


def env(**changes) -> GpuEnv:
    fine = dict(driver_gpus=8, driver_cuda=(12, 4), torch_version="2.11.0+cu124",
                torch_cuda="12.4", torch_sees_gpu=True, dali_cuda=12)  # fmt: skip
    return GpuEnv(**{**fine, **changes})


def test_nothing_to_say_when_all_see_the_gpu_or_there_is_none():
    assert visibility_problem(env()) is None
    assert visibility_problem(env(driver_gpus=0, driver_cuda=None, torch_sees_gpu=False)) is None
    assert visibility_problem(env(dali_cuda=None)) is None


def test_torch_built_for_a_newer_cuda_than_the_driver():
    problem = visibility_problem(env(torch_version="2.11.0+cu130", torch_cuda="13.0",
                                     torch_sees_gpu=False))  # fmt: skip
    assert problem == (
        "the driver has 8 GPU(s) (CUDA 12.4) but torch 2.11.0+cu130 (built for CUDA 13.0) "
        "cannot see them: running on the CPU; reinstall with `make setup CUDA=12`"
    )
    assert "\n" not in problem


def test_cpu_only_torch_on_a_gpu_host():
    problem = visibility_problem(env(torch_cuda=None, torch_sees_gpu=False, driver_cuda=(13, 0)))
    assert "a CPU-only build" in problem and problem.endswith("`make setup CUDA=13`")


def test_dali_for_cuda_13_on_a_cuda_12_driver():
    problem = visibility_problem(env(dali_cuda=13))
    assert problem == (
        "DALI is built for CUDA 13 but the driver supports CUDA 12.4: the GPU decoder cannot "
        "start; reinstall with `make setup CUDA=12`"
    )


def test_probes_read_nvidia_smi_and_the_installed_wheels(monkeypatch):
    def fake_run(cmd, **kwargs):
        out = "NVIDIA H200\nNVIDIA H200\n" if "--query-gpu=name" in cmd else SMI
        return subprocess.CompletedProcess(cmd, 0, stdout=out, stderr="")

    monkeypatch.setattr(gpu_env.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(gpu_env.subprocess, "run", fake_run)
    monkeypatch.setattr(gpu_env, "probe_torch", lambda: ("2.11.0+cu130", "13.0", False))
    monkeypatch.setattr(gpu_env, "probe_dali", lambda: 13)
    found = gpu_env.probe_env()
    assert found == GpuEnv(2, (12, 4), "2.11.0+cu130", "13.0", False, 13)
    assert gpu_env.gpu_visibility_problem().startswith("the driver has 2 GPU(s) (CUDA 12.4)")


def test_no_driver_means_no_gpu(monkeypatch):
    monkeypatch.setattr(gpu_env.shutil, "which", lambda name: None)
    assert gpu_env.probe_driver() == (0, None)


def test_dali_wheel_name_gives_its_cuda(monkeypatch):
    installed = {"nvidia-dali-cuda120": "1.52.0"}

    def version(name):
        if name not in installed:
            raise gpu_env.importlib.metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(gpu_env.importlib.metadata, "version", version)
    assert gpu_env.probe_dali() == 12
    installed.clear()
    assert gpu_env.probe_dali() is None


def test_engine_features_prints_the_problem_in_one_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from engine.cli import main

    monkeypatch.setattr(gpu_env, "probe_env", lambda: env(torch_sees_gpu=False, torch_cuda="13.0"))
    result = CliRunner().invoke(main, ["features", str(tmp_path / "nope"), "--weights", "random"])
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: the driver has 8 GPU(s) (CUDA 12.4) but torch 2.11.0+cu124 (built for CUDA "
        "13.0) cannot see them: running on the CPU; reinstall with `make setup CUDA=12`"
    ]
    quiet = CliRunner().invoke(main, ["features", str(tmp_path / "nope"), "--device", "cpu"])
    assert "warning:" not in quiet.output
