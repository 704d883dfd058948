"""One line saying why torch or DALI cannot see a GPU that the driver has.

    problem = gpu_visibility_problem()   # None when all is well (or there is no GPU at all)
    if problem: log.warning(problem)

The usual cause is a wheel built for a newer CUDA than the driver supports (torch or DALI for
CUDA 13 on a CUDA 12 driver): nothing fails, the run is just silently on the CPU. The probes
are small functions so that tests can replace them.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
from dataclasses import dataclass

import torch

# DALI ships one wheel per CUDA major version; the name says which.
DALI_WHEELS = {"nvidia-dali-cuda120": 12, "nvidia-dali-cuda130": 13}
_DRIVER_CUDA = re.compile(r"CUDA Version:\s*(\d+)\.(\d+)")


@dataclass(frozen=True)
class GpuEnv:
    """What the driver, torch and DALI each say about the GPU.

    Attributes:
        driver_gpus: GPUs `nvidia-smi` lists (0 without a driver).
        driver_cuda: newest CUDA (major, minor) the driver supports, None without a driver.
        torch_version: `torch.__version__`.
        torch_cuda: CUDA torch was built for ("13.0"), None for a CPU-only build.
        torch_sees_gpu: `torch.cuda.is_available()`.
        dali_cuda: CUDA major version of the installed DALI wheel, None without DALI.
    """

    driver_gpus: int
    driver_cuda: tuple[int, int] | None
    torch_version: str
    torch_cuda: str | None
    torch_sees_gpu: bool
    dali_cuda: int | None


def probe_driver() -> tuple[int, tuple[int, int] | None]:
    """(GPU count, driver's CUDA version) from `nvidia-smi`; (0, None) without one."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0, None
    try:
        out = subprocess.run([exe], capture_output=True, text=True, timeout=20).stdout
        names = subprocess.run(
            [exe, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return 0, None  # a driver that cannot answer is no GPU to miss
    match = _DRIVER_CUDA.search(out)
    version = (int(match[1]), int(match[2])) if match else None
    return len([line for line in names.splitlines() if line.strip()]), version


def probe_torch() -> tuple[str, str | None, bool]:

    return torch.__version__, torch.version.cuda, torch.cuda.is_available()


def probe_dali() -> int | None:
    """CUDA major version of the installed DALI wheel (by its distribution name)."""
    for name, cuda in DALI_WHEELS.items():
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        return cuda
    return None


def probe_env() -> GpuEnv:
    gpus, driver_cuda = probe_driver()
    torch_version, torch_cuda, sees = probe_torch()
    return GpuEnv(gpus, driver_cuda, torch_version, torch_cuda, sees, probe_dali())


def _fix(driver_cuda: tuple[int, int] | None) -> str:
    major = driver_cuda[0] if driver_cuda else 12
    return f"reinstall with `make setup CUDA={min(max(major, 12), 13)}`"


def visibility_problem(env: GpuEnv) -> str | None:
    """The one-line complaint for `env`, or None when torch and DALI can use its GPUs."""
    if env.driver_gpus == 0:
        return None  # no GPU to miss: the CPU path is the intended one
    driver = "?" if env.driver_cuda is None else "{}.{}".format(*env.driver_cuda)
    if not env.torch_sees_gpu:
        build = f"built for CUDA {env.torch_cuda}" if env.torch_cuda else "a CPU-only build"
        return (
            f"the driver has {env.driver_gpus} GPU(s) (CUDA {driver}) but torch "
            f"{env.torch_version} ({build}) cannot see them: running on the CPU; "
            + _fix(env.driver_cuda)
        )
    if env.dali_cuda is not None and env.driver_cuda and env.dali_cuda > env.driver_cuda[0]:
        return (
            f"DALI is built for CUDA {env.dali_cuda} but the driver supports CUDA {driver}: "
            "the GPU decoder cannot start; " + _fix(env.driver_cuda)
        )
    return None


def gpu_visibility_problem() -> str | None:
    """`visibility_problem` of this machine (runs `nvidia-smi` when there is one)."""
    return visibility_problem(probe_env())
