"""Images to `pred_results.csv` through the CLI, in the fast suite: shard -> train (features
built on the way, k = 0, random weights) -> predict the test folder. Nothing here can skip."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import shards.format
import shards.reader
from engine.cli import main
from shards.sample_data import make_sample_dataset

pytestmark = pytest.mark.usefixtures("one_blas_thread")  # ViT forwards on 2 shared cores
ROW = re.compile(r"^(?P<name>.+), (?P<cid>\d{4})$")


@pytest.fixture
def one_clip_build(monkeypatch):
    """Build the random ViT-B/32 once (~11 s a build on 2 busy cores): same weights anyway."""
    import features.model

    load, built = features.model.load_clip, {}

    def cached(weights, device="cpu", cache_dir=None):
        if weights not in built:
            built[weights] = load(weights, device, cache_dir)
        return built[weights]

    monkeypatch.setattr(features.model, "load_clip", cached)


def _invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def _count_reads(monkeypatch, folder: Path) -> dict[str, int]:
    """Count how often each file of `folder` is read (whole-file reads and opens)."""
    reads: dict[str, int] = {}
    read_bytes, opener = Path.read_bytes, open

    def inside(path) -> str | None:
        p = Path(path)
        return p.name if p.parent.resolve() == folder.resolve() else None

    def counted_read_bytes(self):
        if name := inside(self):
            reads[name] = reads.get(name, 0) + 1
        return read_bytes(self)

    def counted_open(file, *args, **kwargs):
        if isinstance(file, str | Path) and (name := inside(file)):
            reads[name] = reads.get(name, 0) + 1
        return opener(file, *args, **kwargs)

    def counted_os_open(file, *args, **kwargs):  # shards.sources.read_regular_file
        if isinstance(file, str | Path) and (name := inside(file)):
            reads[name] = reads.get(name, 0) + 1
        return os_open(file, *args, **kwargs)

    os_open = os.open
    monkeypatch.setattr(Path, "read_bytes", counted_read_bytes)
    monkeypatch.setattr("builtins.open", counted_open)
    monkeypatch.setattr(os, "open", counted_os_open)
    return reads


def test_images_to_pred_results_csv(tmp_path, monkeypatch, one_clip_build):
    ds = make_sample_dataset(tmp_path / "data", n_classes=3, max_per_class=4, min_per_class=2,
                             n_test=5, size_range=(40, 64), odd_files=True)  # fmt: skip
    shards_dir, runs = tmp_path / "shards", tmp_path / "runs"
    store = tmp_path / "train.zarr"
    _invoke("shard", ds.train_dir, "--out", shards_dir, "--workers", 1)
    _invoke("features", shards_dir, "--out", store, "--unfreeze-last", 0, "--weights", "random",
            "--backend", "pil", "--workers", 0, "--device", "cpu")  # fmt: skip
    _invoke("train", "--shards", shards_dir, "--features", store, "--unfreeze-last", 0,
            "--rounds", 0, "--runs", runs, "--out", runs / "r")  # fmt: skip

    def no_tar_walk(*args, **kwargs):
        raise AssertionError("prediction walked the tars to list names (a second JPEG read)")

    monkeypatch.setattr(shards.reader, "iter_samples", no_tar_walk)
    monkeypatch.setattr(shards.format, "scan_tar", no_tar_walk)  # the index is used
    reads = _count_reads(monkeypatch, ds.test_dir)
    out = tmp_path / "out" / "pred_results.csv"
    result = _invoke("predict", ds.test_dir, "--model", runs / "latest", "--out", out,
                     "--backend", "pil", "--device", "cpu")  # fmt: skip
    files = sorted(p.name for p in ds.test_dir.iterdir())
    assert f"{len(files)} predictions: {out}" in result.output
    raw = out.read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw
    rows = [ROW.match(line) for line in raw.decode("utf-8").splitlines()]
    assert all(rows) and [m["name"] for m in rows] == files  # one row per file, sorted
    assert {m["cid"] for m in rows} <= {"0000", "0001", "0002"}
    assert out.with_suffix(".zip").is_file()
    # each test image read once (packing), none twice; the empty file is listed, not read
    assert set(reads.values()) == {1} and set(reads) <= set(files)
    assert len(reads) >= len(files) - 1


def test_predict_checks_out_before_loading_the_model(tmp_path, monkeypatch):
    import heads.export

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(heads.export, "load_model", no_load)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "run").mkdir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "imgs"), "--model",
                                       str(tmp_path / "run"), "--out", str(blocker / "p.csv")])  # fmt: skip
    assert result.exit_code == 1
    assert f"--out {blocker / 'p.csv'}: {blocker} is a file, not a folder" in result.output
    assert not blocker.with_suffix(".zip").exists()


@pytest.mark.parametrize("option", ["--backend", "--device"])
def test_predict_refuses_unknown_backend_and_device(tmp_path, option):
    result = CliRunner().invoke(main, ["predict", str(tmp_path), option, "tpu"])
    assert result.exit_code != 0 and "'tpu' is not one of" in result.output
