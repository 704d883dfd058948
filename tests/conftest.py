"""Shared fixtures. Heavy objects (a random-weight ViT-B/32 takes ~10 s to build) are session-scoped."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        # The marker itself: `item.keywords` also holds parent folder names (a checkout in a
        # folder named "gpu" would skip every test).
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def one_blas_thread():
    """One BLAS thread for a module of ViT forwards: on a 2-core machine shared with other
    jobs, 2 threads thrash (measured ~10x slower); modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_blas_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def restore_numerics():
    """Commands set process-wide numerics (`heads.numerics`); a test that runs one must not
    change what the next test computes with."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.backends.cudnn.allow_tf32)  # fmt: skip
    precision = torch.get_float32_matmul_precision()
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
     torch.backends.cudnn.allow_tf32) = cudnn  # fmt: skip
    torch.set_float32_matmul_precision(precision)
    if cublas is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas
