"""Run folders (issue 21 items 4, 12, 17; issue 19 item 4): one module names every file, a
finished run is never overwritten, an unfinished one resumes only with its own settings, two
runs never share a folder, config.json works from any folder and re-makes model.pt byte for
byte."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_output_rule import one_line_refusal, snapshot
from test_run_pipeline import one_clip_build, random_clip  # noqa: F401  (one CLIP build)
from test_train_cli import _store

from engine import runs as run_files
from engine.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def train(store: Path, runs: Path, *args):
    return invoke("train", "--features", store, "--runs", runs, "--rounds", 0,
                  "--weights", "random", *args)  # fmt: skip


def test_a_finished_run_is_refused_and_left_as_it_is(tmp_path):
    store, _ = _store(tmp_path)
    run = tmp_path / "runs" / "r"
    assert train(store, tmp_path / "runs", "--out", run).exit_code == 0
    assert (run / run_files.FINISHED).is_file()
    before = snapshot(run)
    for options in ((), ("--seed", 3)):  # the same options again, or others
        result = train(store, tmp_path / "runs", "--out", run, *options)
        one_line_refusal(result, str(run), "holds a finished run")
        assert snapshot(run) == before  # model, config, metrics.jsonl: untouched


def test_an_unfinished_run_resumes_only_with_its_settings(tmp_path, monkeypatch):
    import heads.trainer

    real_fit = heads.trainer.fit

    def killed_fit(*args, checkpoint_dir=None, **kwargs):
        Path(checkpoint_dir).mkdir(parents=True)
        raise RuntimeError("killed")

    store, _ = _store(tmp_path)
    run = tmp_path / "runs" / "r"
    monkeypatch.setattr(heads.trainer, "fit", killed_fit)
    assert isinstance(train(store, tmp_path / "runs", "--out", run).exception, RuntimeError)
    assert (run / run_files.FAILED).is_file() and not (run / run_files.FINISHED).exists()
    (run / run_files.METRICS_LINES).write_text('{"epoch": 0, "stale": true}\n')
    monkeypatch.setattr(heads.trainer, "fit", real_fit)

    other = train(store, tmp_path / "runs", "--out", run, "--seed", 3)
    one_line_refusal(other, "holds an unfinished run with other settings (screen.seed, train.seed differ)",
                     f"--config {run / run_files.CONFIG}")  # fmt: skip
    result = train(store, tmp_path / "runs", "--out", run)
    assert result.exit_code == 0, result.output
    assert (run / run_files.FINISHED).is_file() and not (run / run_files.FAILED).exists()
    epochs = json.loads((run / run_files.CONFIG).read_text())["train"]["epochs_lp"]
    lines = [json.loads(x) for x in (run / run_files.METRICS_LINES).read_text().splitlines()]
    assert [x["epoch"] for x in lines] == list(range(epochs))  # no stale or doubled line


def test_two_runs_in_the_same_second_get_two_folders(tmp_path, monkeypatch):
    """Issue 21.12: both picked work/runs/<timestamp>; the second failed."""
    monkeypatch.setattr(run_files.time, "strftime", lambda fmt: "20250101-120000")
    store, _ = _store(tmp_path)
    runs = tmp_path / "runs"
    for _ in range(2):
        result = train(store, runs)
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in runs.iterdir()) == [
        "20250101-120000", "20250101-120000-2", "latest"]  # fmt: skip
    assert all((runs / n / run_files.FINISHED).is_file() for n in ("20250101-120000",
                                                                  "20250101-120000-2"))  # fmt: skip
    assert (runs / "latest").resolve() == (runs / "20250101-120000-2").resolve()


def test_new_run_dir_is_exclusive(tmp_path, monkeypatch):
    monkeypatch.setattr(run_files.time, "strftime", lambda fmt: "stamp")
    made = [run_files.new_run_dir(tmp_path) for _ in range(3)]
    assert [p.name for p in made] == ["stamp", "stamp-2", "stamp-3"]
    assert all((p / run_files.MARKER).is_file() for p in made)


def test_config_works_from_another_folder_and_remakes_identical_bytes(tmp_path, monkeypatch):
    """Issue 21.17: config.json held paths relative to the first working folder, and a re-made
    model.pt had equal tensors but other bytes."""
    first_dir, other_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir(), other_dir.mkdir()
    _store(first_dir)
    monkeypatch.chdir(first_dir)
    result = train(Path("train.zarr"), Path("runs"), "--out", Path("runs") / "first")
    assert result.exit_code == 0, result.output
    first = first_dir / "runs" / "first"
    config = json.loads((first / run_files.CONFIG).read_text())
    assert config["features"] == "../../train.zarr"  # relative to config.json's folder
    assert config["runs"] == ".."

    monkeypatch.chdir(other_dir)
    result = invoke("train", "--config", first / run_files.CONFIG, "--out", "again")
    assert result.exit_code == 0, result.output
    again = other_dir / "again"
    assert json.loads((again / run_files.CONFIG).read_text())["features"] == "../../a/train.zarr"
    model_a = (first / run_files.MODEL).read_bytes()
    assert model_a == (again / run_files.MODEL).read_bytes()
    digest = json.loads((again / run_files.FINISHED).read_text())["model_sha256"]
    assert digest == hashlib.sha256(model_a).hexdigest()


def _listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.mark.slow  # ~30 s on 2 cores: one screening round trains two probes
def test_the_run_folder_module_names_every_file_a_run_writes(tmp_path):
    store, data = _store(tmp_path)
    run = tmp_path / "runs" / "r"
    result = invoke("train", "--features", store, "--runs", tmp_path / "runs", "--rounds", 1,
                    "--weights", "random", "--out", run)  # fmt: skip
    assert result.exit_code == 0, result.output
    labels = tmp_path / "labels.csv"
    rows = zip(data.paths, data.labels, strict=True)
    labels.write_text("".join(f"{p}, {data.classes[y]}\n" for p, y in rows))
    pred = tmp_path / "pred.csv"
    assert invoke("predict", store, "--model", run, "--out", pred).exit_code == 0
    assert invoke("eval", pred, labels, "--json", run / run_files.EVAL).exit_code == 0

    transient = {run_files.FAILED, run_files.CHECKPOINT}  # gone from a finished run
    assert _listing(run) == set(run_files.RUN_FILES) - transient
    rounds = run / run_files.ROUNDS
    round_dirs = {run_files.round_dir(r) for r in range(2)}  # round 0 + one round
    assert _listing(rounds) == set(run_files.SCREEN_FILES) | round_dirs
    for name in round_dirs:
        assert _listing(rounds / name) == set(run_files.ROUND_FILES)
