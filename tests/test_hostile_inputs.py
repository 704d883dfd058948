"""Hostile inputs, the input side of issue 21: what a new user's odd folders, names, links,
special files, disks and manifests do to `engine shard`, `predict`, `train`, `features` and
`screen`. Each test names its issue item; every one failed before its fix.

One source walker (`shards.sources`) resolves links, reads regular files only (size capped)
and names what it skips; class ids are checked wherever a class list is read; the lock is
named by the resolved path; `engine.errors.user_error_from` turns OS errors into one line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from clip_helpers import write_images
from PIL import Image
from test_lock import holder, release
from test_os_errors import assert_one_error_line
from test_os_errors import inputs as inputs  # noqa: F401  (module fixture: store, run, shards)

from bench.tiny_clip import tiny_clip
from engine.classnames import class_ids, read_class_names
from engine.cli import main
from engine.errors import UserError, user_error_from
from engine.lock import lock_path, output_lock
from shards.config import ShardConfig
from shards.format import open_shards
from shards.keys import make_key
from shards.repair import prepare_image
from shards.sources import list_sources, read_regular_file
from shards.writer import pack


def invoke(*args):
    return CliRunner().invoke(
        main, [os.fsdecode(a) if isinstance(a, Path) else str(a) for a in args]
    )


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) when the block runs longer than `seconds`."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --- item 8: links to nothing and link loops; item 9: FIFOs, devices, size cap -------------


@pytest.fixture
def hostile_train(tmp_path) -> Path:
    """Two class folders of real images plus every kind of entry that is not a regular file."""
    src = tmp_path / "train"
    write_images(src, {"0000": 2, "0001": 2})
    (src / "0000" / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (src / "0000" / "self.jpg").symlink_to("self.jpg")  # resolves to itself: ELOOP
    (src / "0001" / "up").symlink_to("..")  # a folder link back to the source folder
    os.mkfifo(src / "0001" / "pipe.jpg")
    (src / "0001" / "zero.jpg").symlink_to("/dev/zero")
    (src / "0001" / "link.jpg").symlink_to(src / "0000" / "img_0.jpg")  # a good link: an image
    return src


def test_links_and_special_files_are_named_skips_never_read(hostile_train, tmp_path):
    out = tmp_path / "shards"
    with deadline(60):  # a FIFO read would block forever, /dev/zero would fill memory
        result = invoke("shard", hostile_train, "--out", out, "--workers", 1)
    assert result.exit_code == 0, result.output
    manifest = manifest_of(out)
    skipped = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert skipped == {
        "0000/dangling.jpg": "broken link: its target does not exist",
        "0000/self.jpg": "link loop: following the link leads back to it",
        "0001/up": "link loop: a link to a folder above it",
        "0001/pipe.jpg": "not a regular file (FIFO)",
        "0001/zero.jpg": "not a regular file (character device)",
    }
    assert manifest["rejected"] == [] and manifest["num_samples"] == 5  # link.jpg is packed
    assert manifest["classes"] == ["0000", "0001"]
    for path in skipped:  # every skip is named in the summary
        assert f"skipped: {path}: " in result.output


def test_read_regular_file_refuses_fifos_devices_and_files_over_the_cap(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "pipe.jpg")  # listed as a file by a walker that does not resolve
    with deadline(10):
        assert "not a regular file (FIFO)" in prepare_image(tmp_path / "pipe.jpg").reason
    assert "character device" in prepare_image(Path("/dev/zero")).reason
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * 1000)
    with pytest.raises(OSError, match="1000 bytes is over the 0 MiB size cap"):
        read_regular_file(big, max_bytes=999)
    assert read_regular_file(big, max_bytes=1000) == b"\xff" * 1000


def test_file_over_the_size_cap_is_rejected_with_the_cap_in_its_reason(tmp_path, monkeypatch):
    test = tmp_path / "test"
    write_images(test, 3)
    (test / "huge.jpg").write_bytes((test / "img_0.jpg").read_bytes() * 40)
    monkeypatch.setattr("shards.sources.MAX_FILE_BYTES", (test / "huge.jpg").stat().st_size - 1)
    manifest = pack(test, tmp_path / "shards", ShardConfig(workers=1))
    (rejected,) = manifest["rejected"]  # rejected, not skipped: a test file still gets a row
    assert rejected["path"] == "huge.jpg"
    assert "size cap (shards.sources.MAX_FILE_BYTES)" in rejected["reason"]
    assert manifest["num_samples"] == 3


# --- item 11: skipped files are listed as skipped, not rejected ---------------------------


def test_hidden_files_of_a_test_folder_are_skipped_not_rejected(tmp_path):
    test = tmp_path / "test"
    write_images(test, 2)
    (test / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (test / "._img_0.jpg").write_bytes(b"\0\5\26\7AppleDouble")
    (test / ".ipynb_checkpoints").mkdir()
    (test / ".ipynb_checkpoints" / "img_1.jpg").write_bytes((test / "img_1.jpg").read_bytes())
    result = invoke("shard", test, "--out", tmp_path / "shards", "--workers", 1)
    assert result.exit_code == 0, result.output
    manifest = manifest_of(tmp_path / "shards")
    assert manifest["rejected"] == []  # `engine predict` gives rejected files fallback rows
    assert [s["path"] for s in manifest["skipped"]] == [
        ".DS_Store",
        "._img_0.jpg",
        ".ipynb_checkpoints/img_1.jpg",
    ]
    assert {s["reason"] for s in manifest["skipped"]} == {"hidden file or folder"}
    assert "0 rejected, 3 skipped" in result.output


# --- item 3: two classes, one id ----------------------------------------------------------


@pytest.mark.parametrize("folders", [("0001", "cat"), ("01", "1")])
def test_two_class_folders_with_one_id_are_refused_at_shard(folders, tmp_path):
    write_images(tmp_path / "train", dict.fromkeys(folders, 1))
    out = tmp_path / "shards"
    line = assert_one_error_line(
        invoke("shard", tmp_path / "train", "--out", out), "0001", "rename one"
    )
    assert all(f"'{name}'" in line for name in folders)
    assert not out.exists()  # refused before any work


def test_class_ids_are_unique_or_refused():
    assert class_ids(["0042", "7", "cat"]) == ["0042", "0007", "0002"]
    with pytest.raises(UserError, match="'0002' and 'cat' of the model both get class id 0002"):
        class_ids(["0000", "0002", "cat"], "the model")


def test_train_and_predict_refuse_classes_with_one_id(inputs, tmp_path):  # noqa: F811
    from test_train_cli import _store

    from features.store import open_store

    store, _ = _store(tmp_path)
    attrs_path = store / "zarr.json"
    meta = json.loads(attrs_path.read_text())
    classes = meta["attributes"]["classes"]
    meta["attributes"]["classes"] = [classes[0], "1", "01"][: len(classes)]
    attrs_path.write_text(json.dumps(meta))  # as shards of an older version could give
    assert open_store(store).classes == meta["attributes"]["classes"]
    result = invoke("train", "--features", store, "--rounds", 0, "--out", tmp_path / "run")
    assert_one_error_line(result, "'1' and '01'", "0001")
    assert not (tmp_path / "run").exists()

    from heads.predict import prediction_rows

    with pytest.raises(UserError, match="'0001' and 'cat' of the model"):
        prediction_rows(["a.jpg"], np.zeros((1, 2)), ["0001", "cat"])


# --- item 6: the lock of a link is the lock of its target ---------------------------------


def test_out_and_a_link_to_it_contend_for_one_lock(tmp_path):
    real = tmp_path / "shards"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    assert lock_path(link) == lock_path(real) == lock_path(tmp_path / "x" / ".." / "shards")
    proc = holder(real)
    try:
        with pytest.raises(UserError, match=f"PID {proc.pid}"), output_lock(link, wait=False):
            pass
    finally:
        release(proc)


def test_shard_out_through_a_link_waits_for_or_is_refused_by_the_holder(tmp_path):
    write_images(tmp_path / "images", {"0000": 1, "0001": 1})
    real, link = tmp_path / "shards", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real)
    proc = holder(real)
    try:  # --force deletes what the holder writes: refused, as for the folder's own name
        result = invoke("shard", tmp_path / "images", "--out", link, "--force")
        assert_one_error_line(result, "shard folder", f"PID {proc.pid}")
        assert list(real.iterdir()) == []
    finally:
        release(proc)


# --- item 8: names that are not UTF-8; item 10: line breaks in test file names -------------


def test_a_name_that_is_not_utf8_is_a_named_skip_in_a_class_folder(tmp_path):
    src = tmp_path / "train"
    write_images(src, {"0000": 2, "0001": 1})
    bad = os.fsencode(src / "0001") + b"/caf\xe9.jpg"  # Latin-1 bytes
    Path(os.fsdecode(bad)).write_bytes((src / "0000" / "img_0.jpg").read_bytes())
    assert make_key(os.fsdecode(b"0001/caf\xe9.jpg")).startswith("0001_caf_jpg-")  # no crash
    result = invoke("shard", src, "--out", tmp_path / "shards", "--workers", 1)
    assert result.exit_code == 0, result.output
    (skipped,) = manifest_of(tmp_path / "shards")["skipped"]
    assert skipped == {
        "path": "0001/caf\\xe9.jpg",
        "reason": "file name is not UTF-8; rename it to include the file",
    }


def test_a_class_folder_whose_name_is_not_utf8_is_no_class(tmp_path):
    src = tmp_path / "train"
    write_images(src, {"0000": 1, "0001": 1})
    folder = Path(os.fsdecode(os.fsencode(src) + b"/\xe9t\xe9"))
    write_images(folder, 1)
    listing = list_sources(src)
    assert listing.classes == ["0000", "0001"]
    assert listing.skipped == [
        {
            "path": "\\xe9t\\xe9/img_0.jpg",
            "reason": "file name is not UTF-8; rename it to include the file",
        }
    ]


@pytest.mark.parametrize("name", [b"a\nb.jpg", b"a\rb.jpg", b"caf\xe9.jpg"])
def test_a_test_file_name_a_csv_row_cannot_hold_is_refused_before_any_work(name, tmp_path):
    test = tmp_path / "test"
    write_images(test, 2)
    Path(os.fsdecode(os.fsencode(test) + b"/" + name)).write_bytes(b"x")
    out = tmp_path / "shards"
    line = assert_one_error_line(invoke("shard", test, "--out", out), "rename the file")
    assert ascii(name)[2:-1] in line
    assert not out.exists()


def test_predict_refuses_such_a_name_before_loading_the_model(tmp_path, monkeypatch):
    test = tmp_path / "test"
    write_images(test, 1)
    (test / "two\nlines.jpg").write_bytes(b"x")

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the names were checked")

    monkeypatch.setattr("heads.export.load_model", no_model)
    model = tmp_path / "run"
    model.mkdir()
    result = invoke("predict", test, "--model", model, "--out", tmp_path / "pred.csv")
    assert_one_error_line(result, "two\\nlines.jpg", "rename the file")
    assert not (tmp_path / "pred.csv").exists()


# --- item 8: a full disk, with and without a file name, chained ---------------------------


def test_user_error_from_a_full_disk_without_a_file_name():
    err = user_error_from(OSError(errno.ENOSPC, "No space left on device"))
    assert str(err) == (
        "No space left on device (errno 28) while writing the output; free some space or "
        "choose a path on another disk, then run the command again"
    )
    try:  # chained: the one that names a path wins
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/out/x.tar")
        except OSError as inner:
            raise OSError(errno.ENOSPC, "No space left on device") from inner
    except OSError as outer:
        assert str(user_error_from(outer)).startswith("/out/x.tar: No space left on device;")
    assert user_error_from(OSError(errno.EACCES, "Permission denied")) is None  # no path: a bug


def _disk_full_args(name: str, inputs: dict, tmp_path: Path, monkeypatch) -> list:  # noqa: F811
    root = inputs["root"]
    if name == "shard":
        monkeypatch.setattr("shards.writer.write_dali_index", _full_disk_chained)
        return ["shard", root / "images", "--out", tmp_path / "out"]
    if name == "features":
        monkeypatch.setattr("features.model.load_clip", tiny_clip)
        monkeypatch.setattr("features.store.FeatureStore.mark_complete", _full_disk_chained)
        return ["features", root / "shards", "--out", tmp_path / "out.zarr", "--weights", "random"]
    monkeypatch.setattr("heads.export.save_model", _full_disk_chained)
    return ["train", "--features", inputs["store"], "--rounds", 0, "--out", tmp_path / "run"]


def _full_disk_chained(*args, **kwargs):
    """Three chained ENOSPC errors, none with a file name, under a library's own error."""
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as first:
            raise OSError(errno.ENOSPC, "No space left on device") from first
    except OSError as second:
        raise RuntimeError("write failed") from second


@pytest.mark.parametrize("name", ["shard", "features", "train"])
def test_a_full_disk_is_one_line_in_every_writing_command(name, inputs, tmp_path, monkeypatch):  # noqa: F811
    args = _disk_full_args(name, inputs, tmp_path, monkeypatch)
    assert_one_error_line(invoke(*args), "No space left on device", "free some space")


# --- item 8: batch size, a pickle as weights ----------------------------------------------


@pytest.mark.parametrize("command", ["predict", "features"])
def test_a_huge_batch_size_is_refused_with_the_valid_range(command, inputs):  # noqa: F811
    src = inputs["store"] if command == "predict" else inputs["root"] / "shards"
    result = invoke(command, src, "--batch-size", 1_000_000_000)
    assert_one_error_line(result, "--batch-size", "1000000000", "1<=x<=8192")


class _RunsCode:
    """A pickle payload that creates a file when it is loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_given_as_weights_is_one_line_and_never_runs(tmp_path):
    from features.model import _load_weights

    marker = tmp_path / "ran"
    weights = tmp_path / "weights.pt"
    weights.write_bytes(pickle.dumps({"visual.proj": _RunsCode(marker)}))
    with pytest.raises(UserError) as caught, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _load_weights(tiny_clip().model, weights)
    message = str(caught.value)
    assert message.startswith(f"{weights} is not a ViT-B/32 checkpoint")
    assert "weights_only" not in message and "\n" not in message
    assert not marker.exists() and not seen  # nothing ran, nothing printed


# --- item 13: predict's advice; item 15: manifest paths; item 17 ---------------------------


def test_predict_packs_a_test_folder_as_unlabeled(tmp_path, monkeypatch):
    """A test folder holding a sub-folder is packed flat (files of the sub-folder get rows),
    instead of asking for --labeled/--unlabeled, which `engine predict` does not have."""
    import heads.predict

    test = tmp_path / "test"
    write_images(test, 2)
    write_images(test / "more", 1)
    seen = {}

    def names_only(model, shard_dir, batch_size, backend):
        seen["names"] = heads.predict.shard_paths(shard_dir)
        raise UserError("stop")

    monkeypatch.setattr(heads.predict, "predict_shards", names_only)
    with pytest.raises(UserError, match="stop"):
        heads.predict.predict_images(None, test)
    assert seen["names"] == ["img_0.jpg", "img_1.jpg", "more/img_0.jpg"]
    assert "--labeled" not in invoke("predict", "--help").output


@pytest.mark.parametrize(
    ("key", "value"),
    [("index", "/etc/passwd"), ("name", "../other/shard-000000.tar"), ("index", "..")],  # fmt: skip
)
def test_manifest_paths_outside_the_shard_folder_are_refused(key, value, inputs, tmp_path):  # noqa: F811
    shards = tmp_path / "shards"
    shards.mkdir()
    for path in filter(Path.is_file, (inputs["root"] / "shards").iterdir()):
        (shards / path.name).write_bytes(path.read_bytes())
    manifest = manifest_of(shards)
    manifest["shards"][0][key] = value
    (shards / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="is not a file name inside the shard folder"):
        open_shards(shards)
    result = invoke("predict", shards, "--model", inputs["run"], "--out", tmp_path / "p.csv")
    assert_one_error_line(result, repr(value), "engine shard --force")


def test_decompression_bomb_warning_becomes_a_named_reason(tmp_path, monkeypatch):
    write_images(tmp_path / "test", 1)
    Image.new("RGB", (50, 40), "red").save(tmp_path / "test" / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)  # 2000 px: a warning, not an error
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        manifest = pack(tmp_path / "test", tmp_path / "shards", ShardConfig(workers=1))
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]
    (converted,) = [c for c in manifest["converted"] if c["path"] == "big.png"]
    assert "large image 50x40 (over Pillow's 1500 pixel warning limit)" in converted["reason"]


def test_a_utf16_class_names_file_is_named(tmp_path, inputs):  # noqa: F811
    names = tmp_path / "names.csv"
    names.write_text("0000, rose\n0001, tulip\n", encoding="utf-16")
    with pytest.raises(UserError, match=f"--class-names {names} is UTF-16 text; save it as UTF-8"):
        read_class_names(names)
    result = invoke("screen", "--features", inputs["store"], "--rounds", 0,
                    "--out", tmp_path / "screen", "--class-names", names)  # fmt: skip
    assert_one_error_line(result, str(names), "UTF-16")


def test_screen_refuses_missing_shards(inputs, tmp_path):  # noqa: F811
    missing = tmp_path / "no-shards"
    result = invoke("screen", "--features", inputs["store"], "--shards", missing,
                    "--out", tmp_path / "screen")  # fmt: skip
    assert_one_error_line(result, "--shards", str(missing), "does not exist")
    assert not (tmp_path / "screen").exists()


# --- items 8, 9, 11, 13 end to end: a row for every real test file, none for the rest -------


def _hostile_test_folder(root: Path) -> tuple[Path, list[str]]:
    """A test folder with real images (one empty, one in a sub-folder) and every kind of entry
    that is not one; returns it and the names that must get a row."""
    test = root / "test"
    write_images(test, 3)
    write_images(test / "sub", 1)
    (test / "empty.jpg").write_bytes(b"")  # a real file Pillow cannot read: fallback row
    (test / "dangling.jpg").symlink_to(root / "gone.jpg")
    (test / "self.jpg").symlink_to("self.jpg")
    os.mkfifo(test / "pipe.jpg")
    (test / "zero.jpg").symlink_to("/dev/zero")
    (test / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (test / "._img_0.jpg").write_bytes(b"\0\5\26\7AppleDouble")
    (test / ".ipynb_checkpoints").mkdir()
    (test / ".ipynb_checkpoints" / "img_1.jpg").write_bytes((test / "img_1.jpg").read_bytes())
    return test, ["empty.jpg", "img_0.jpg", "img_1.jpg", "img_2.jpg", "sub/img_0.jpg"]


def test_every_real_test_file_gets_a_row_and_nothing_else_does(tmp_path):
    from types import SimpleNamespace

    from heads.predict import prediction_table, shard_paths

    test, expected = _hostile_test_folder(tmp_path)
    with deadline(60):
        manifest = pack(test, tmp_path / "shards", ShardConfig(labeled=False, workers=1))
    names = shard_paths(tmp_path / "shards")
    rejected = [r["path"] for r in manifest["rejected"]]
    model = SimpleNamespace(classes=["0000", "0001"], fallback_class=1)
    rows = prediction_table(model, names, np.zeros((len(names), 2)), rejected)
    assert [name for name, _ in rows] == expected
    assert dict(rows)["empty.jpg"] == "0001"  # the fallback class
    assert len(manifest["skipped"]) == 7


@pytest.mark.slow
def test_predict_a_hostile_test_folder_end_to_end(tmp_path, caplog):
    write_images(tmp_path / "train", {"0000": 2, "0001": 2})
    store, run = tmp_path / "train.zarr", tmp_path / "runs" / "r"
    steps = [
        ["shard", tmp_path / "train", "--out", tmp_path / "shards", "--workers", 1],
        [
            "features",
            tmp_path / "shards",
            "--out",
            store,
            "--unfreeze-last",
            0,
            "--weights",
            "random",
            "--backend",
            "pil",
            "--workers",
            0,
            "--device",
            "cpu",
        ],  # fmt: skip
        [
            "train",
            "--shards",
            tmp_path / "shards",
            "--features",
            store,
            "--unfreeze-last",
            0,
            "--rounds",
            0,
            "--runs",
            tmp_path / "runs",
            "--out",
            run,
        ],  # fmt: skip
    ]
    for step in steps:
        result = invoke(*step)
        assert result.exit_code == 0, result.output
    test, expected = _hostile_test_folder(tmp_path)
    pred = tmp_path / "pred.csv"
    with deadline(300):
        result = invoke("predict", test, "--model", run, "--out", pred, "--backend", "pil")
    assert result.exit_code == 0, result.output
    assert f"{len(expected)} predictions" in result.stdout
    rows = pred.read_text(encoding="utf-8").splitlines()
    assert [row.rsplit(", ", 1)[0] for row in rows] == expected
    warned = caplog.text  # the CLI's logging goes through pytest's capture here
    assert "7 file(s) skipped, no row: .DS_Store (hidden file or folder)" in warned
    assert "pipe.jpg (not a regular file (FIFO))" in warned
    assert "1 file(s) could not be read and get the fallback class" in warned
