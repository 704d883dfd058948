"""The output-folder rule (issue 21 item 1): nothing the engine did not write is ever deleted
or overwritten, `--force` included. Each hostile case runs through the CLI and asserts the
exit code, the one line, and that every file the user had is still there, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from clip_helpers import write_images

import features.model
from bench.tiny_clip import tiny_clip
from engine.cli import main
from engine.commands import demo
from engine.errors import UserError
from engine.outputs import MARKER, OutputKind, claim_output_dir, fresh_output_dir, remove_owned
from features.store import remove_store
from shards.config import ShardConfig
from shards.writer import pack


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under `folder`, by relative path."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def user_folder(path: Path) -> Path:
    """A folder of someone's work: a file and a sub-folder holding another."""
    (path / "chapter1").mkdir(parents=True)
    (path / "thesis.txt").write_text("four years of work\n")
    (path / "chapter1" / "draft.md").write_text("# draft\n")
    return path


def one_line_refusal(result, *words: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rule")
    write_images(root / "src", {"a": 2, "b": 2})
    pack(root / "src", root / "shards", ShardConfig(shard_size=4, workers=1))
    return root / "shards"


@pytest.fixture(autouse=True)
def no_model_load(monkeypatch):
    monkeypatch.setattr(features.model, "load_clip", tiny_clip)  # a refusal loads nothing


def features_args(shards: Path, out: Path, *extra):
    return ["features", shards, "--out", out, "--weights", "random", "--backend", "pil",
            "--workers", 0, *extra]  # fmt: skip


@pytest.mark.parametrize("force", [(), ("--force",)])
def test_features_out_a_folder_of_user_files_is_refused(tmp_path, shards, force):
    out = user_folder(tmp_path / "mine")
    before = snapshot(out)
    result = invoke(*features_args(shards, out, *force))
    one_line_refusal(result, str(out), "thesis.txt", "chapter1/", "not a feature store")
    assert snapshot(out) == before


def test_features_out_the_features_folder_keeps_both_stores(tmp_path, shards):
    work = tmp_path / "work" / "features"
    for split in ("train", "test"):
        assert invoke(*features_args(shards, work / f"{split}.zarr")).exit_code == 0
    before = snapshot(work)
    result = invoke(*features_args(shards, work, "--force"))
    one_line_refusal(result, "test.zarr/", "train.zarr/")
    assert snapshot(work) == before


def test_features_out_the_shards_folder_keeps_the_shards(shards):
    before = snapshot(shards)
    result = invoke(*features_args(shards, shards, "--force"))
    one_line_refusal(result, str(shards), "shards")
    assert snapshot(shards) == before


def test_features_out_the_current_folder_is_refused(tmp_path, shards, monkeypatch):
    here = user_folder(tmp_path / "here")
    monkeypatch.chdir(here)
    before = snapshot(here)
    result = invoke(*features_args(shards, Path(".")))
    one_line_refusal(result, "the current folder", "thesis.txt")
    assert snapshot(here) == before


def test_features_force_rebuilds_the_engines_own_store(tmp_path, shards):
    out = tmp_path / "f.zarr"
    assert invoke(*features_args(shards, out)).exit_code == 0
    (out / "zarr.json").touch()  # a later rebuild must not keep anything of the old one
    result = invoke(*features_args(shards, out, "--force"))
    assert result.exit_code == 0, result.output


def test_remove_store_refuses_a_foreign_folder(tmp_path):
    out = user_folder(tmp_path / "mine")
    before = snapshot(out)
    with pytest.raises(UserError, match="holds files the engine did not write"):
        remove_store(out)
    assert snapshot(out) == before


@pytest.mark.parametrize("force", [(), ("--force",)])
def test_shard_out_a_folder_of_user_files_is_refused(tmp_path, shards, force):
    src = shards.parent / "src"
    out = user_folder(tmp_path / "mine")
    before = snapshot(out)
    result = invoke("shard", src, "--out", out, "--workers", 1, *force)
    one_line_refusal(result, "thesis.txt", "not a shard folder")
    assert snapshot(out) == before


def test_shard_out_the_source_folder_is_refused(tmp_path, shards):
    src = shards.parent / "src"
    before = snapshot(src)
    result = invoke("shard", src, "--out", src, "--force")
    one_line_refusal(result, str(src), "not a shard folder")
    assert snapshot(src) == before


def test_demo_out_a_folder_of_user_files_is_refused(tmp_path, monkeypatch):
    out = user_folder(tmp_path / "mine")
    before = snapshot(out)
    result = invoke("demo", "--out", out, "--weights", "random")
    one_line_refusal(result, "thesis.txt", "not a demo folder")
    assert snapshot(out) == before


@pytest.mark.parametrize("marked", [True, False])  # False: a demo of an older version
def test_demo_out_an_earlier_demo_is_rebuilt(tmp_path, monkeypatch, marked):
    out = tmp_path / "demo"
    if marked:
        claim_output_dir(out, demo.DEMO_OUTPUT)
    (out / "data").mkdir(parents=True)
    (out / "data" / "old.jpg").write_bytes(b"old")
    (out / demo.DEMO_CONFIG).write_text("{}")

    def stop(out, classes, seed):  # the steps after the claim are the demo's own tests'
        raise UserError(f"stopped; {sorted(p.name for p in out.iterdir())}")

    monkeypatch.setattr(demo, "_generate", stop)
    result = invoke("demo", "--out", out, "--weights", "random")
    one_line_refusal(result, f"stopped; ['{MARKER}']")  # emptied, still marked as a demo


def test_predict_out_a_user_file_is_refused(tmp_path):
    doc = tmp_path / "thesis.txt"
    doc.write_text("four years of work\n")
    result = invoke("predict", tmp_path, "--model", tmp_path, "--out", doc)
    one_line_refusal(result, str(doc), "not a predictions CSV")
    assert doc.read_text() == "four years of work\n"
    assert not (tmp_path / "thesis.zip").exists()


def test_predict_out_beside_a_user_zip_is_refused(tmp_path):
    (tmp_path / "pred.zip").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip of the user's
    result = invoke("predict", tmp_path, "--model", tmp_path, "--out",
                    tmp_path / "pred.csv")  # fmt: skip
    one_line_refusal(result, "pred.zip", "not a zip of pred.csv")


def test_screen_out_a_folder_of_user_files_is_refused(tmp_path):
    from test_run_pipeline import make_store  # a ViT-B-32 store, as engine screen wants

    store = make_store(tmp_path / "f.zarr")
    out = user_folder(tmp_path / "mine")
    before = snapshot(out)
    result = invoke("screen", "--features", store, "--out", out, "--rounds", 0)
    one_line_refusal(result, "thesis.txt", "not a screening folder")
    assert snapshot(out) == before


def test_train_out_a_folder_of_user_files_is_refused(tmp_path, shards):
    store = tmp_path / "f.zarr"
    assert invoke(*features_args(shards, store)).exit_code == 0
    out = user_folder(tmp_path / "mine")
    before = snapshot(out)
    result = invoke("train", "--features", store, "--shards", shards, "--rounds", 0,
                    "--out", out)  # fmt: skip
    one_line_refusal(result, "thesis.txt", "not a run folder")
    assert snapshot(out) == before


KIND = OutputKind("test output", "test")


def test_claim_marks_a_new_or_empty_folder_and_keeps_its_own(tmp_path):
    assert claim_output_dir(tmp_path / "new", KIND) is False
    assert (tmp_path / "new" / MARKER).is_file()
    (tmp_path / "empty").mkdir()
    assert claim_output_dir(tmp_path / "empty", KIND) is False
    assert claim_output_dir(tmp_path / "empty", KIND) is True  # marked now: ours


def test_another_kinds_output_is_refused(tmp_path):
    claim_output_dir(tmp_path / "run", OutputKind("run folder", "run"))
    with pytest.raises(UserError, match="holds another engine output"):
        claim_output_dir(tmp_path / "run", KIND)
    with pytest.raises(UserError, match="holds another engine output"):
        remove_owned(tmp_path / "run", KIND)
    assert (tmp_path / "run" / MARKER).is_file()


def test_remove_owned_never_removes_the_current_folder(tmp_path, monkeypatch):
    folder = tmp_path / "out"
    claim_output_dir(folder, KIND)
    monkeypatch.chdir(folder)
    with pytest.raises(UserError, match="holds the current folder"):
        remove_owned(folder, KIND)
    with pytest.raises(UserError, match="holds the current folder"):
        fresh_output_dir(tmp_path / "out", KIND)
    assert folder.is_dir()


def test_a_file_in_place_of_the_folder_is_refused(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(UserError, match="is a file, not a folder"):
        claim_output_dir(tmp_path / "out", KIND)
    with pytest.raises(UserError, match="not a folder the engine wrote"):
        remove_owned(tmp_path / "out", KIND)
    assert (tmp_path / "out").read_text() == "not a folder"


def test_bench_out_a_folder_of_user_files_is_refused(tmp_path):
    out = user_folder(tmp_path / "mine")
    before = snapshot(out)
    result = invoke("bench", "--stages", "shard", "--quick", "--out", out)
    one_line_refusal(result, "thesis.txt", "not a bench folder")
    assert snapshot(out) == before


def test_nothing_is_removed_through_a_link(tmp_path):
    target = tmp_path / "real"
    claim_output_dir(target, KIND)
    (tmp_path / "link").symlink_to(target, target_is_directory=True)
    with pytest.raises(UserError, match="is a symbolic link; the engine deletes nothing"):
        remove_owned(tmp_path / "link", KIND)
    assert (target / MARKER).is_file() and (tmp_path / "link").is_symlink()
