"""The feature store through every stage, by the CLI: the shards' folder it records (thumbnails,
unreadable test files), the one staleness rule, predict's scratch folder.

One small dataset, random ViT-B/32 (built once), k = 0, Pillow on the CPU.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import zarr
from click.testing import CliRunner

import heads.predict
from engine.cli import main
from shards.decode.preprocess import PREPROCESS
from shards.sample_data import make_sample_dataset

pytestmark = pytest.mark.usefixtures("one_blas_thread")  # ViT forwards on 2 shared cores
UNREADABLE = {"empty.jpg": b"", "page.jpg": b"<html>not an image</html>", "noise.png": b"\x89P"}
FEATURES = ["--unfreeze-last", "0", "--weights", "random", "--backend", "pil", "--workers", "0",
            "--device", "cpu"]  # fmt: skip


def run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(*args) -> object:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def one_line_error(result, text: str) -> None:
    assert result.exit_code == 1, result.output
    assert text in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """Train shards -> store -> run (k = 0); a test folder of 32 files, 3 of them unreadable,
    packed to shards and a store (each stage as a user runs it)."""
    import features.model

    load, built = features.model.load_clip, {}

    def cached(weights, device="cpu", cache_dir=None):
        if weights not in built:
            built[weights] = load(weights, device, cache_dir)
        return built[weights]

    patch = pytest.MonkeyPatch()
    patch.setattr(features.model, "load_clip", cached)
    root = tmp_path_factory.mktemp("flow")
    ds = make_sample_dataset(root / "data", n_classes=3, max_per_class=6, min_per_class=5,
                             n_test=29, size_range=(40, 64), odd_files=False)  # fmt: skip
    for name, data in UNREADABLE.items():
        (ds.test_dir / name).write_bytes(data)
    work = root / "work"
    ok("shard", ds.train_dir, "--out", work / "shards/train", "--workers", 1)
    ok("features", work / "shards/train", "--out", root / "F.zarr", *FEATURES)
    ok("train", "--features", root / "F.zarr", "--rounds", 0, "--runs", work / "runs",
       "--out", work / "runs/r")  # fmt: skip
    ok("shard", ds.test_dir, "--out", work / "shards/test", "--workers", 1)
    ok("features", work / "shards/test", "--out", root / "T.zarr", *FEATURES)
    yield {"root": root, "ds": ds, "work": work, "run": work / "runs/r"}
    patch.undo()


def test_features_then_screen_gives_a_page_with_thumbnails(flow, tmp_path):
    """issue 19 item 1: the store records its shards' folder; `engine screen` finds it."""
    store = flow["root"] / "F.zarr"
    source = dict(zarr.open_group(str(store), mode="r").attrs["source"])
    assert source["folder"] == str((flow["work"] / "shards/train").resolve())
    result = ok("screen", "--features", store, "--rounds", 0, "--out", tmp_path / "S")
    html = (tmp_path / "S" / "suspects.html").read_text(encoding="utf-8")
    assert "no thumbnails" not in result.output
    assert html.count('src="data:image/jpeg;base64,') >= 3


def test_moved_shards_fall_back_to_the_shards_option(flow, tmp_path):
    store, shards = flow["root"] / "F.zarr", flow["work"] / "shards/train"
    moved = tmp_path / "moved"
    shutil.move(shards, moved)
    try:
        result = ok("screen", "--features", store, "--rounds", 0, "--out", tmp_path / "a")
        assert f"no thumbnails: the store's shards are no longer at {shards.resolve()}" in (
            result.output
        )
        assert "data:image/jpeg" not in (tmp_path / "a" / "suspects.html").read_text("utf-8")
        ok("screen", "--features", store, "--rounds", 0, "--out", tmp_path / "b",
           "--shards", moved)  # fmt: skip
        assert "data:image/jpeg" in (tmp_path / "b" / "suspects.html").read_text("utf-8")
        other = flow["work"] / "shards/test"  # other shards: refused by fingerprint
        result = run("screen", "--features", store, "--rounds", 0, "--out", tmp_path / "c",
                     "--shards", other)  # fmt: skip
        one_line_error(result, f"feature store {store} was not made from the shards in {other}")
    finally:
        shutil.move(moved, shards)


def _rows(csv: Path) -> dict[str, str]:
    return dict(line.rsplit(", ", 1) for line in csv.read_text(encoding="utf-8").splitlines())


def test_every_test_file_gets_a_row_from_folder_shards_and_store(flow, tmp_path, caplog):
    """issue 21 item 2: the store lacks the unreadable files; its shards' manifest names them."""
    run_dir, work = flow["run"], flow["work"]
    sources = {"folder": flow["ds"].test_dir, "shards": work / "shards/test",
               "store": flow["root"] / "T.zarr"}  # fmt: skip
    tables = {}
    for kind, src in sources.items():
        caplog.clear()
        with caplog.at_level("WARNING", logger="heads.predict"):
            result = ok("predict", src, "--model", run_dir, "--out", tmp_path / f"{kind}.csv",
                        "--backend", "pil", "--device", "cpu")  # fmt: skip
        assert result.output.splitlines()[-1].startswith("32 predictions")
        assert "3 file(s) could not be read and get the fallback class" in caplog.text
        tables[kind] = _rows(tmp_path / f"{kind}.csv")
    names = sorted(p.name for p in flow["ds"].test_dir.iterdir())
    assert len(names) == 32
    for kind, rows in tables.items():
        assert sorted(rows) == names, kind
    fallback = {tables["folder"][name] for name in UNREADABLE}
    assert len(fallback) == 1 and {tables["store"][n] for n in UNREADABLE} == fallback
    assert tables["store"] == tables["shards"]


def test_a_store_whose_shards_moved_warns_that_rows_are_missing(flow, tmp_path, caplog):
    shards = flow["work"] / "shards/test"
    moved = tmp_path / "moved"
    shutil.move(shards, moved)
    try:
        with caplog.at_level("WARNING", logger="heads.predict"):
            result = ok("predict", flow["root"] / "T.zarr", "--model", flow["run"],
                        "--out", tmp_path / "p.csv", "--device", "cpu")  # fmt: skip
        assert result.output.splitlines()[-1].startswith("29 predictions")
        assert "lacks (unreadable ones) get no row" in caplog.text and "--shards" in caplog.text
        result = ok("predict", flow["root"] / "T.zarr", "--model", flow["run"], "--out",
                    tmp_path / "q.csv", "--device", "cpu", "--shards", moved)  # fmt: skip
        assert result.output.splitlines()[-1].startswith("32 predictions")
    finally:
        shutil.move(moved, shards)


def _stale_copy(store: Path, dest: Path) -> Path:
    """A copy of `store` whose view recipe is not the engine's (as after an upgrade)."""
    shutil.copytree(store, dest)
    attrs = zarr.open_group(str(dest), mode="r+").attrs
    attrs["preprocess"] = {**PREPROCESS, "interpolation": "bilinear"}
    return dest


def test_a_store_with_another_view_recipe_is_refused_by_every_stage(flow, tmp_path):
    """issue 19 item 2: one staleness rule, built on the extractor's record, in every stage."""
    train = _stale_copy(flow["root"] / "F.zarr", tmp_path / "F.zarr")
    test = _stale_copy(flow["root"] / "T.zarr", tmp_path / "T.zarr")
    stale = "is stale (its view recipe (preprocess) is not this engine's)"
    result = run("features", flow["work"] / "shards/train", "--out", train, *FEATURES)
    one_line_error(result, f"{train} exists with other settings (preprocess differ)")
    result = run("train", "--features", train, "--rounds", 0, "--runs", tmp_path / "runs")
    one_line_error(result, f"feature store {train} {stale}")
    assert not (tmp_path / "runs").exists()
    result = run("screen", "--features", train, "--out", tmp_path / "S")
    one_line_error(result, f"feature store {train} {stale}")
    assert not (tmp_path / "S" / "suspects.html").exists()
    result = run("predict", test, "--model", flow["run"], "--out", tmp_path / "p.csv")
    one_line_error(result, f"feature store {test} {stale}")
    assert not (tmp_path / "p.csv").exists()


def test_predict_removes_its_scratch_shards_on_an_error(flow, tmp_path, monkeypatch):
    """issue 21 item 16: an exception mid-predict leaves no shard copy; a killed run's copy
    (its PID gone) is swept by the next run, a live run's is left alone."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / "engine-predict-999999999-abc"  # no such PID
    live = tmp_path / f"engine-predict-{os.getppid()}-def"
    for folder in (dead, live):
        (folder / "shards").mkdir(parents=True)

    def broken(*args, **kwargs):
        [scratch] = [p for p in tmp_path.glob(f"engine-predict-{os.getpid()}-*")]
        assert (scratch / "shards" / "manifest.json").is_file()  # packed, now fail mid-way
        raise RuntimeError("injected failure")

    monkeypatch.setattr(heads.predict, "predict_shards", broken)
    result = run("predict", flow["ds"].test_dir, "--model", flow["run"], "--out",
                 tmp_path / "p.csv", "--device", "cpu")  # fmt: skip
    assert isinstance(result.exception, RuntimeError)
    assert sorted(p.name for p in tmp_path.glob("engine-predict-*")) == [live.name]
    assert not (tmp_path / "p.csv").exists()
