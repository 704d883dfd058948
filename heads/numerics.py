"""How a run computes on the device: deterministic kernels and TF32, set in one place.

    flags = apply_numerics(deterministic=True, tf32=True)   # before any CUDA work
    flags == numerics_flags()                               # read back from torch

Called at the start of `engine train`, `engine predict` and `engine features` (and by
`bench.gpu_check`), before the first CUDA kernel: cuBLAS reads `CUBLAS_WORKSPACE_CONFIG` when
it creates its handle, so a later setting would not take.

Determinism (on by default; `--no-deterministic` or `TrainConfig.deterministic = False` turns
it off): `torch.use_deterministic_algorithms(True, warn_only=True)` picks the deterministic
kernel wherever torch has one and warns (instead of failing a long run) where it has none;
cuDNN is pinned to deterministic algorithms without autotuning; cuBLAS gets a fixed
workspace. Uninitialised memory is not filled (torch's default under determinism): the
engine never reads memory it has not written, and a filled multi-GB token table would cost
seconds. What is bit-exact where is in the README ("Reproducibility").

TF32 (on by default): float32 matmuls on CUDA (the kNN search, the probe, the head) use
TF32 tensor cores, rounding inputs to a 10-bit mantissa (relative error ~5e-4 per product,
accumulation in fp32): ~0.01 per logit at temperature 0.05, against the ~0.06 of the bf16
autocast the head escapes (`heads.tensors.fp32`). TF32 is deterministic, so it does not
trade against the determinism above. The tail's blocks run in bf16 autocast anyway.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.utils.deterministic

log = logging.getLogger(__name__)

# cuBLAS's documented setting for reproducible results: 8 buffers of 4 MiB.
CUBLAS_WORKSPACE = ":4096:8"
CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"


def apply_numerics(deterministic: bool = True, tf32: bool = True) -> dict:
    """Set determinism and TF32 for this process; returns `numerics_flags()`."""
    if deterministic and os.environ.get(CUBLAS_ENV) is None:
        if torch.cuda.is_initialized():
            log.warning("CUDA was initialised before %s was set: cuBLAS may not be "
                        "deterministic in this process", CUBLAS_ENV)  # fmt: skip
        os.environ[CUBLAS_ENV] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False if deterministic else torch.backends.cudnn.benchmark
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32
    return numerics_flags()


def numerics_flags() -> dict:
    """The settings as torch reports them (what a run actually used)."""
    return {
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cublas_workspace": os.environ.get(CUBLAS_ENV),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    }
