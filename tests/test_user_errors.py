"""Every error a user can cause ends in one clear message that says what to do (issue 6).

Each case runs the real CLI and checks the exit code, that no traceback leaks, and the words
that tell the user what is wrong and how to fix it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from engine.cli import main
from features.store import FeatureStore, StoreSpec
from shards.decode.preprocess import PREPROCESS


def run_cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def make_store(path: Path, *, depth: int = 0, n: int = 4) -> Path:
    """A complete, valid feature store with random contents."""
    rng = np.random.default_rng(0)
    spec = StoreSpec(
        n=n,
        chunk_n=n,
        depth=depth,
        views=1,
        classes=["0000", "0001"],
        weights={"name": "random", "sha256": None},
        preprocess=PREPROCESS,
    )
    store = FeatureStore.create(path, spec)
    embed = rng.normal(size=(n, 512)).astype(np.float16)
    tokens = rng.normal(size=(1, n, 50, 768)).astype(np.float16) if depth else None
    store.write_chunk(
        0,
        keys=[f"k{i}" for i in range(n)],
        paths=[f"{i % 2:04d}/{i}.jpg" for i in range(n)],
        labels=np.arange(n, dtype=np.int32) % 2,
        embed=embed,
        tokens=tokens,
    )
    store.mark_complete()
    return path


def test_missing_folder(tmp_path):
    result = run_cli("shard", str(tmp_path / "nope"))
    assert result.exit_code == 1
    assert "source folder not found" in result.output and "nope" in result.output


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli("shard", str(tmp_path / "empty"))
    assert result.exit_code == 1
    assert "no files found" in result.output


def test_store_from_another_model(tmp_path):
    store = make_store(tmp_path / "train.zarr")
    zarr.open_group(str(store), mode="r+").attrs["model"] = "ViT-L-14"
    result = run_cli(
        "train", "--features", str(store), "--rounds", "0", "--out", str(tmp_path / "r")
    )
    assert result.exit_code == 1
    assert "'ViT-L-14'" in result.output and "--force" in result.output


def test_unfreeze_last_deeper_than_the_store(tmp_path):
    store = make_store(tmp_path / "train.zarr", depth=0)
    result = run_cli(
        "train", "--features", str(store), "--unfreeze-last", "2", "--rounds", "0",
        "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert result.exit_code == 1
    assert "--unfreeze-last 2 is larger than the depth 0" in result.output
    assert "engine features" in result.output


def test_no_shards_and_no_store(tmp_path):
    result = run_cli(
        "train", "--features", str(tmp_path / "none.zarr"), "--shards", str(tmp_path / "none"),
    )  # fmt: skip
    assert result.exit_code == 1
    assert "engine shard data/train" in result.output


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without GPU")
def test_no_gpu(tmp_path):
    result = run_cli("bench", "--device", "cuda", "--out", str(tmp_path / "b"))
    assert result.exit_code == 1
    assert "no CUDA GPU is visible" in result.output and "--device cpu" in result.output


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without GPU")
def test_gpu_decoder_without_gpu(tmp_path):
    from shards.sample_data import make_sample_dataset

    info = make_sample_dataset(tmp_path / "d", n_classes=2, max_per_class=2, min_per_class=2,
                               n_test=0, odd_files=False)  # fmt: skip
    assert run_cli("shard", str(info.train_dir), "--out", str(tmp_path / "s")).exit_code == 0
    result = run_cli(
        "features", str(tmp_path / "s"), "--backend", "dali-gpu", "--weights", "random",
        "--out", str(tmp_path / "f.zarr"),
    )  # fmt: skip
    assert result.exit_code == 1
    assert "needs a CUDA GPU" in result.output


def test_no_weights_offline(tmp_path, monkeypatch):
    """Offline and nothing cached: say where the weights file goes, never fall back."""
    import open_clip.pretrained

    import features.model

    def offline(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", offline)
    monkeypatch.setattr(features.model, "cached_openai_weights", lambda *a, **k: None)
    from shards.sample_data import make_sample_dataset

    info = make_sample_dataset(tmp_path / "d", n_classes=2, max_per_class=2, min_per_class=2,
                               n_test=0, odd_files=False)  # fmt: skip
    assert run_cli("shard", str(info.train_dir), "--out", str(tmp_path / "s")).exit_code == 0
    result = run_cli(
        "features", str(tmp_path / "s"), "--weights", "openai", "--out", str(tmp_path / "f.zarr"),
    )  # fmt: skip
    assert result.exit_code == 1
    assert "cannot download the OpenAI ViT-B/32 weights" in result.output
    assert "--weights /path/to/ViT-B-32.pt" in result.output
    assert not (tmp_path / "f.zarr").exists() or "random" not in str(
        zarr.open_group(str(tmp_path / "f.zarr")).attrs.get("weights")
    )


def test_weights_file_missing(tmp_path):
    from shards.sample_data import make_sample_dataset

    info = make_sample_dataset(tmp_path / "d", n_classes=2, max_per_class=2, min_per_class=2,
                               n_test=0, odd_files=False)  # fmt: skip
    assert run_cli("shard", str(info.train_dir), "--out", str(tmp_path / "s")).exit_code == 0
    result = run_cli("features", str(tmp_path / "s"), "--weights", str(tmp_path / "missing.pt"))
    assert result.exit_code == 1
    assert "missing.pt" in result.output
