"""shards.writer.pack + shards.reader: round trips, determinism, resume, manifests."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import webdataset as wds

import shards.writer as writer
from engine.errors import UserError
from shards.config import ShardConfig
from shards.index import index_lines
from shards.keys import make_key
from shards.manifest import load_manifest
from shards.reader import iter_samples, shard_files
from shards.sample_data import ODD_KINDS, make_sample_dataset

SHARD_SIZE = 16


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    info = make_sample_dataset(root, n_classes=5, max_per_class=14, min_per_class=1, n_test=12)
    single = info.train_dir / "9999"  # a class with exactly one image
    single.mkdir()
    (single / "only.jpg").write_bytes((info.train_dir / "0000" / "0000_0000.jpg").read_bytes())
    return info


@pytest.fixture(scope="module")
def packed(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "train"
    cfg = ShardConfig(shard_size=SHARD_SIZE, short_side=None, workers=1)
    return out, writer.pack(dataset.train_dir, out, cfg)


def _expected(dataset) -> dict[str, str]:
    """relpath -> class folder of every file that should be stored."""
    files = {p.relative_to(dataset.train_dir).as_posix() for p in dataset.train_dir.rglob("*")}
    files = {f for f in files if (dataset.train_dir / f).is_file()}
    rejected = {f for f, kind in dataset.odd_files.items() if ODD_KINDS[kind] == "rejected"}
    return {f: f.split("/")[0] for f in sorted(files - rejected)}


def test_every_accepted_file_read_back_once_with_its_label(dataset, packed):
    out, manifest = packed
    expected = _expected(dataset)
    samples = list(iter_samples(out))
    assert [s.meta["path"] for s in samples] == list(expected)  # store order = sorted paths
    assert [s.index for s in samples] == list(range(len(expected)))
    assert [manifest["classes"][s.label] for s in samples] == list(expected.values())
    assert [s.key for s in samples] == [make_key(p) for p in expected]
    assert manifest["num_samples"] == len(expected)
    assert manifest["class_counts"]["9999"] == 1  # the class with a single image


def test_shards_hold_exactly_shard_size_but_the_last(packed):
    out, manifest = packed
    files = shard_files(out)
    counts = [f.count for f in files]
    assert counts[:-1] == [SHARD_SIZE] * (len(counts) - 1) and 0 < counts[-1] <= SHARD_SIZE
    assert [f.offset for f in files] == [SHARD_SIZE * s for s in range(len(files))]
    second = list(iter_samples(out, shard_ids=[1]))
    assert [s.index for s in second] == list(range(SHARD_SIZE, 2 * SHARD_SIZE))


def test_webdataset_reads_the_same_samples(dataset, packed):
    out, manifest = packed
    urls = [str(f.tar) for f in shard_files(out)]
    rows = [(s["__key__"], int(s["cls"]), json.loads(s["json"])["path"], s["jpg"])
            for s in wds.WebDataset(urls, shardshuffle=False)]  # fmt: skip
    ours = [(s.key, s.label, s.meta["path"], s.jpeg) for s in iter_samples(out)]
    assert rows == ours


def test_manifest_names_every_repaired_converted_and_rejected_file(dataset, packed):
    _, manifest = packed
    for outcome in ("repaired", "converted", "rejected"):
        named = {e["path"] for e in manifest[outcome]}
        expected = {f for f, kind in dataset.odd_files.items() if ODD_KINDS[kind] == outcome}
        assert named == expected, outcome
        assert all(e["reason"] for e in manifest[outcome])
    assert manifest["num_files"] == len(list(dataset.train_dir.rglob("*.*")))
    assert manifest["params"] == {"shard_size": SHARD_SIZE, "short_side": None, "quality": 95,
                                  "labeled": True}  # fmt: skip


def test_stored_jpegs_are_the_original_bytes(dataset, packed):
    out, _ = packed
    for s in iter_samples(out):
        kind = dataset.odd_files.get(s.meta["path"])
        if kind is None or ODD_KINDS[kind] == "stored":
            assert s.jpeg == (dataset.train_dir / s.meta["path"]).read_bytes()
            assert not s.meta["repaired"] and s.meta["source_format"] == "jpeg"


def test_index_matches_dalis_own_wds2idx(packed, tmp_path):
    sys.path.insert(0, str(Path(sys.executable).parent.parent / "bin"))
    wds2idx = pytest.importorskip("wds2idx")
    out, _ = packed
    for f in shard_files(out):
        theirs = tmp_path / "theirs.idx"
        with wds2idx.IndexCreator(str(f.tar), str(theirs), verbose=False) as creator:
            creator.create_index()
        assert f.idx.read_text().splitlines() == theirs.read_text().splitlines()
        assert index_lines(f.tar) == theirs.read_text().splitlines()


def test_one_and_two_workers_write_identical_bytes(dataset, packed, tmp_path):
    out1, _ = packed
    out2 = tmp_path / "two"
    writer.pack(
        dataset.train_dir, out2, ShardConfig(shard_size=SHARD_SIZE, short_side=None, workers=2)
    )
    names = sorted(p.name for p in out1.glob("shard-*"))
    assert names == sorted(p.name for p in out2.glob("shard-*"))
    for name in names:
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes(), name


def test_interrupted_run_resumes_without_redoing_finished_shards(
    dataset, packed, tmp_path, monkeypatch
):
    out1, manifest1 = packed
    out = tmp_path / "resumed"
    cfg = ShardConfig(shard_size=SHARD_SIZE, short_side=None, workers=1)
    real_finish, calls = writer.finish_shard, []

    def crash_on_third(builder):
        calls.append(builder.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_finish(builder)

    monkeypatch.setattr(writer, "finish_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        writer.pack(dataset.train_dir, out, cfg)
    assert not (out / "manifest.json").exists() and len(list(out.glob("shard-*.tar"))) == 2
    first_two = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")}
    calls.clear()
    monkeypatch.setattr(writer, "finish_shard", real_finish)
    prepared = []
    real_prepare = writer._prepare_all
    monkeypatch.setattr(writer, "_prepare_all",
                        lambda root, todo, c: (prepared.append(len(todo)), real_prepare(root, todo, c))[1])  # fmt: skip
    manifest = writer.pack(dataset.train_dir, out, cfg)
    assert manifest == {**manifest1, "source": manifest["source"]}
    assert prepared == [len(_all_files(dataset)) - _done(out, 2)]
    assert {p: (out / p).stat().st_mtime_ns for p in first_two} == first_two  # not rewritten
    for p in out1.glob("shard-*"):
        assert (out / p.name).read_bytes() == p.read_bytes()
    assert not list(out.glob(".*.tmp"))


def _all_files(dataset) -> list[Path]:
    return [p for p in dataset.train_dir.rglob("*") if p.is_file()]


def _done(out: Path, shards: int) -> int:
    states = [
        json.loads((out / ".progress" / f"shard-{s:06d}.json").read_text()) for s in range(shards)
    ]
    return sum(s["consumed"] for s in states)


def test_finished_output_is_reused_and_force_rebuilds(dataset, packed, tmp_path):
    out, manifest = packed
    assert (
        writer.pack(
            dataset.train_dir, out, ShardConfig(shard_size=SHARD_SIZE, short_side=None, workers=1)
        )
        == manifest
    )
    with pytest.raises(UserError, match="pass --force"):
        writer.pack(dataset.train_dir, out, ShardConfig(shard_size=8, short_side=None, workers=1))
    small = tmp_path / "small"
    rebuilt = writer.pack(
        dataset.train_dir, small, ShardConfig(shard_size=8, short_side=None, workers=1)
    )
    again = writer.pack(
        dataset.train_dir, small, ShardConfig(shard_size=64, short_side=None, workers=1, force=True)
    )
    assert len(rebuilt["shards"]) > 1 and len(again["shards"]) == 1
    assert sorted(p.name for p in small.glob("shard-*")) == ["shard-000000.idx", "shard-000000.tar"]
    assert load_manifest(small)["shard_size"] == 64


def test_flat_folder_packs_unlabeled(dataset, tmp_path):
    manifest = writer.pack(dataset.test_dir, tmp_path / "test", ShardConfig(workers=1))
    assert manifest["labeled"] is False and manifest["classes"] == []
    samples = list(iter_samples(tmp_path / "test"))
    assert {s.label for s in samples} == {-1}
    assert {s.meta["path"] for s in samples} | {e["path"] for e in manifest["rejected"]} == set(
        dataset.test_labels
    )
    assert [e["path"] for e in manifest["rejected"]] == ["00002.jpg"]  # the empty file


def test_layout_detection_and_user_errors(tmp_path):
    with pytest.raises(UserError, match="source folder not found"):
        writer.pack(tmp_path / "nope", tmp_path / "out", ShardConfig(workers=1))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no files found"):
        writer.pack(tmp_path / "empty", tmp_path / "out", ShardConfig(workers=1))
    mixed = tmp_path / "mixed"
    (mixed / "0000").mkdir(parents=True)
    (mixed / "0000" / ".DS_Store").write_bytes(b"x")
    (mixed / "loose.jpg").write_bytes(b"")
    with pytest.raises(UserError, match="--labeled"):
        writer.pack(mixed, tmp_path / "out", ShardConfig(workers=1))
    with pytest.raises(UserError, match="no readable image"):
        writer.pack(mixed, tmp_path / "out", ShardConfig(workers=1, labeled=False))
    with pytest.raises(UserError, match="shard_size"):
        ShardConfig(shard_size=0)


def test_pack_workers_do_not_import_the_writer():
    """A spawned worker imports whatever its pickled initializer and task name: the writer
    pulls in webdataset and torch (~1.7 s per worker), so neither may live in shards.writer."""
    import pickle

    from shards import writer

    assert b"shards.writer" not in pickle.dumps(writer._ignore_sigint)
    assert b"shards.writer" not in pickle.dumps(writer.prepare_image)


def test_finished_shards_are_fsynced_before_their_progress_record(dataset, tmp_path, monkeypatch):
    """tar and index flushed, renamed, folder flushed, then recorded: a power cut cannot leave
    a shard recorded as done whose renamed tar is empty (issue 19 item 6)."""
    flushed: list[str] = []
    real = os.fsync

    def recording(fd):
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    out = tmp_path / "shards"
    writer.pack(
        dataset.train_dir, out, ShardConfig(shard_size=SHARD_SIZE, short_side=None, workers=1)
    )
    names = [Path(p).name if Path(p) != out else "<out>" for p in flushed]
    tar_flush = names.index(".shard-000000.tar.tmp")
    record = names.index(next(n for n in names if n.startswith(".shard-000000.json")))
    assert any(n.startswith(".shard-000000.idx.") for n in names[:tar_flush])  # index first
    assert names[tar_flush + 1] == "<out>"  # the rename itself is on disk ...
    assert tar_flush < record  # ... before the progress record is written
    assert names.count(".shard-000001.tar.tmp") == 1  # every shard, not only the first
