"""The OS refusing a path the user chose ends in one `Error:` line and exit code 1 (issue 14,
item 5): below a regular file, on a read-only disk, out of space; usage errors and bad
manifests too. Every command goes through the one mechanism, `engine.errors.user_error_from`,
called by the CLI's entry."""

from __future__ import annotations

import errno
import os
import pathlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from clip_helpers import write_images
from test_train_cli import _store

from bench.tiny_clip import tiny_clip
from engine.cli import main
from engine.errors import UserError, user_error_from


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_error_line(result, *words: str) -> str:
    """Exit 1, no traceback, exactly one `Error:` line on stderr holding `words`."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Images, their shards, a store, a trained run and a prediction file, made once."""
    root = tmp_path_factory.mktemp("inputs")
    write_images(root / "images", {"0000": 2, "0001": 2})
    assert invoke("shard", root / "images", "--out", root / "shards").exit_code == 0
    store, data = _store(root)
    run = root / "runs" / "run"
    args = ["--features", store, "--rounds", 0, "--weights", "random", "--out", run]
    assert invoke("train", *args, "--runs", root / "runs").exit_code == 0
    pred = root / "pred.csv"
    assert invoke("predict", store, "--model", run, "--out", pred).exit_code == 0
    (root / "blocker").write_text("a regular file\n")
    return {"root": root, "store": store, "run": run, "pred": pred, "paths": data.paths}


def _command(name: str, inputs: dict, out: Path) -> list:
    root = inputs["root"]
    return {
        "shard": ["shard", root / "images", "--out", out],
        "features": ["features", root / "shards", "--out", out, "--weights", "random"],
        "train --out": ["train", "--features", inputs["store"], "--rounds", 0, "--out", out],
        "train --runs": ["train", "--features", inputs["store"], "--rounds", 0, "--runs", out],
        "predict --out": ["predict", inputs["store"], "--model", inputs["run"], "--out", out],
        "eval --json": ["eval", inputs["pred"], inputs["pred"], "--json", out],
    }[name]


COMMANDS = ["shard", "features", "train --out", "train --runs", "predict --out", "eval --json"]


@pytest.fixture
def tiny_weights(monkeypatch):
    # `engine features --weights random` builds the real ViT-B/32 (seconds); the failure
    # under test comes before any image is seen, so a tiny CLIP does.
    monkeypatch.setattr("features.model.load_clip", tiny_clip)


@pytest.mark.parametrize("name", COMMANDS)
def test_output_below_a_regular_file(name, inputs, tiny_weights):
    out = inputs["root"] / "blocker" / "out"
    assert_one_error_line(
        invoke(*_command(name, inputs, out)), "blocker", "file"
    )  # "regular file" or "is a file"
    assert inputs["root"].joinpath("blocker").read_text() == "a regular file\n"


@pytest.mark.parametrize("name", COMMANDS)
def test_output_on_a_read_only_disk(name, inputs, tiny_weights, monkeypatch):
    # Tests run as root, whom chmod does not stop: the disk's refusal is simulated where every
    # writer starts, creating its folder.
    read_only = inputs["root"] / "read-only"
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self.absolute()).startswith(str(read_only)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    out = read_only / "sub" / "out"
    assert_one_error_line(invoke(*_command(name, inputs, out)), "read-only", "writable disk")
    assert not read_only.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_in_a_folder_without_write_permission(inputs):
    locked = inputs["root"] / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = invoke("shard", inputs["root"] / "images", "--out", locked / "out")
        assert_one_error_line(result, "locked", "permissions")
    finally:
        locked.chmod(0o755)


def test_user_error_from_names_the_path_and_what_to_do():
    full = OSError(errno.ENOSPC, "No space left on device", "/data/out/shard-000001.tar")
    err = user_error_from(full)
    assert isinstance(err, UserError)
    assert str(err) == (
        "/data/out/shard-000001.tar: No space left on device; "
        "free some space or choose a path on another disk"
    )
    try:  # a library re-raising the OS error as its own type: found through the cause
        try:
            raise full
        except OSError as inner:
            raise RuntimeError("zarr could not write") from inner
    except RuntimeError as outer:
        assert str(user_error_from(outer)) == str(err)
    assert user_error_from(OSError(errno.EBADF, "Bad file descriptor", "x")) is None  # a bug
    # no path: a bug, except for a full or read-only disk (tests/test_hostile_inputs.py)
    assert user_error_from(OSError(errno.EACCES, "Permission denied")) is None
    assert user_error_from(ValueError("a bug")) is None


def test_usage_error_is_one_line_exit_1():
    result = invoke("train", "--unfreeze-last", 13)
    line = assert_one_error_line(result, "--unfreeze-last", "13", "0<=x<=12")
    assert result.stderr == line + "\n"  # no usage block, no "Try ... for help" line


@pytest.mark.parametrize("text", ['{"format": "engine.shards/1", "class', "[]", "\xff\xfe"])
def test_eval_train_counts_not_a_manifest(text, inputs, tmp_path):
    bad = tmp_path / "manifest.json"
    bad.write_bytes(text.encode("latin-1"))
    result = invoke("eval", inputs["pred"], inputs["pred"], "--train-counts", bad)
    assert_one_error_line(result, str(bad), "manifest.json")


def test_predict_checks_its_output_before_inference(inputs, monkeypatch):
    def no_inference(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr("heads.export.load_model", no_inference)
    args = _command("predict --out", inputs, inputs["root"] / "blocker" / "pred.csv")
    assert_one_error_line(invoke(*args), "blocker", "file")  # "regular file" or "is a file"
