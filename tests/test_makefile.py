"""`make setup` picks torch and DALI builds for the driver's CUDA (dry runs: `make -n`)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry_setup(
    tmp_path: Path, *args: str, driver_cuda: str | None = None, env_cuda: str | None = None
) -> list[str]:
    """The commands `make setup ARGS` would run, with a fake nvidia-smi (or none) on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"  # first on PATH, so a real one (on a GPU host) is not asked
    header = f"| NVIDIA-SMI 570.1  Driver Version: 570.1  CUDA Version: {driver_cuda}  |"
    smi.write_text(f"#!/bin/sh\necho '{header}'\n" if driver_cuda else "#!/bin/sh\nexit 9\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    path = f"{bin_dir}:/usr/bin:/bin"
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA", "MAKEFLAGS", "MFLAGS")}
    if env_cuda is not None:
        env["CUDA"] = env_cuda
    out = subprocess.run(
        ["make", "-n", "-B", "-C", str(ROOT), "setup", f"VENV={tmp_path / 'venv'}", *args],
        env={**env, "PATH": path}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if "pip install" in line]


def test_no_gpu_installs_what_ci_always_installed(tmp_path):
    lines = dry_setup(tmp_path)
    assert len(lines) == 3 and lines[0].endswith("pip install -q -U pip")
    py = f"{sys.version_info[0]}{sys.version_info[1]}"
    assert lines[1].endswith(
        f"pip install -q --require-hashes -r requirements/lock-py{py}-cu13.txt"
    )
    assert lines[2].endswith("pip install -q --no-deps -e .")


def test_cuda_12_takes_torch_from_its_index_at_the_locked_version(tmp_path):
    lines = dry_setup(tmp_path, "CUDA=12")
    assert lines[1].endswith("--index-url https://download.pytorch.org/whl/cu128 torch==2.14.1 "
                             "torchvision==0.29.1")  # fmt: skip
    assert "lock-py" in lines[2] and lines[2].endswith("-cu12.txt")


def test_cuda_13_installs_the_default_lock(tmp_path):
    assert dry_setup(tmp_path, "CUDA=13")[1:] == dry_setup(tmp_path)[1:]


@pytest.mark.parametrize(("driver", "variant"), [("12.4", "12"), ("13.0", "13"), ("14.1", "13")])
def test_default_follows_the_drivers_cuda(tmp_path, driver, variant):
    lines = dry_setup(tmp_path, driver_cuda=driver)
    assert f"-cu{variant}.txt" in lines[-2]


def test_every_lock_pins_with_hashes_and_the_cuda_12_ones_have_no_torch():
    for lock in sorted((ROOT / "requirements").glob("lock-py3*-cu1*.txt")):
        text = lock.read_text()
        assert "--hash=sha256:" in text and "zarr==3.1." in text, lock.name
        assert ("\ntorch==" in text) == lock.name.endswith("cu13.txt"), lock.name
    names = {p.name for p in (ROOT / "requirements").glob("lock-*.txt")}
    assert {f"lock-py3{m}-cu{c}.txt" for m in (11, 12) for c in (12, 13)} <= names


def test_an_unsupported_cuda_is_refused_in_one_line(tmp_path):
    out = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "setup", "CUDA=11"], capture_output=True, text=True
    )
    assert out.returncode != 0
    assert "CUDA=11: this project installs builds for CUDA=12 or CUDA=13" in out.stderr


def test_the_dali_extras_name_one_wheel_each():  # `make lock` resolves them
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert extras["dali-cuda12"][0].startswith("nvidia-dali-cuda120")
    assert extras["dali-cuda13"][0].startswith("nvidia-dali-cuda130")


def test_an_unrelated_cuda_variable_in_the_environment_is_ignored(tmp_path):
    assert dry_setup(tmp_path, env_cuda="/usr/local/cuda")[1].endswith("-cu13.txt")
    assert len(dry_setup(tmp_path, env_cuda="/usr/local/cuda")) == 3  # no torch index
    assert dry_setup(tmp_path, env_cuda="12")[2].endswith("-cu12.txt")
