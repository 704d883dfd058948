"""`engine train` off the happy path (issue 14 items 1-4, 8-10): each defect reproduced
through the CLI, with the exit code, the one line, and what is on disk afterwards."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from heads_helpers import write_store

from engine.cli import main
from features.store import FeatureStore
from shards.manifest import FORMAT

CLASSES = ["0003", "0010", "0042"]
N = 30


@pytest.fixture(scope="module")
def random_clip():
    from features.model import load_clip

    return load_clip("random")


@pytest.fixture(autouse=True)
def one_clip_build(random_clip, monkeypatch):
    """Build the random ViT-B/32 once per module (~10 s each time on 2 busy cores)."""
    import features.model

    def cached(weights, device="cpu", cache_dir=None):
        assert weights == "random" or weights.endswith("w.pt"), weights
        return random_clip  # a weights file here only has to be found, not read

    monkeypatch.setattr(features.model, "load_clip", cached)


def make_store(
    path: Path, weights="random", fingerprint="fp-a", classes=CLASSES, complete=True, depth=0
):
    """A 3-class, 30-sample store that records the shards it came from."""
    rng = np.random.default_rng(0)
    labels = np.arange(N) % len(classes)
    x = rng.standard_normal((len(classes), 512))[labels] + 0.3 * rng.standard_normal((N, 512))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    data = FeatureStore.from_arrays(embed=x.astype(np.float16), labels=labels, classes=list(classes),
                       keys=[f"k{i}" for i in range(N)], paths=[f"{i:02d}.jpg" for i in range(N)],
                       depth=depth, tokens=rng.standard_normal((1, N, 50, 768)) if depth else None)  # fmt: skip
    write_store(path, data, weights=weights)
    attrs = zarr.open_group(str(path), mode="r+").attrs
    attrs.update({"source": {"fingerprint": fingerprint, "num_samples": N}, "complete": complete})
    return path


def make_manifest(folder: Path, fingerprint="fp-a", classes=CLASSES, n=N) -> Path:
    """A shard manifest (no tars: the checks read only the manifest)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "labeled": True, "classes": list(classes), "shard_size": n,
                "shards": [{"name": "shard-000000.tar", "index": "shard-000000.idx", "count": n}],
                "num_samples": n, "fingerprint": fingerprint}  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def train(tmp_path, *args):
    base = ["train", "--runs", tmp_path / "runs", "--shards", tmp_path / "shards"]
    return CliRunner().invoke(main, [str(a) for a in [*base, *args]])


def one_line_error(result, text: str) -> None:
    assert result.exit_code == 1, result.output
    assert text in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_stale_store_is_refused(tmp_path):
    store = make_store(tmp_path / "f.zarr", fingerprint="fp-old")
    make_manifest(tmp_path / "shards", fingerprint="fp-new")  # re-packed after the store
    result = train(tmp_path, "--features", store, "--rounds", 0)
    one_line_error(result, f"feature store {store} was not made from the shards in")
    assert "fingerprint fp-old vs fp-new" in result.output and "--force" in result.output
    assert not (tmp_path / "runs").exists()


def test_foreign_store_is_refused(tmp_path):
    store = make_store(tmp_path / "f.zarr", fingerprint=None)
    twelve = [f"{i:04d}" for i in range(12)]
    make_manifest(tmp_path / "shards", classes=twelve, n=60)
    result = train(tmp_path, "--features", store, "--rounds", 0)
    one_line_error(result, "3 vs 12 classes; 30 vs 60 samples")


def test_unfinished_store_from_other_shards_is_not_rebuilt(tmp_path):
    store = make_store(tmp_path / "f.zarr", fingerprint="fp-a", complete=False)
    make_manifest(tmp_path / "shards", fingerprint="fp-b")
    result = train(tmp_path, "--features", store, "--rounds", 0)
    one_line_error(result, f"feature store {store} is unfinished and was made from other shards")
    assert "pass --force" not in result.output  # that advice would overwrite it with other data
    assert zarr.open_group(str(store), mode="r").attrs["source"]["fingerprint"] == "fp-a"


def test_unknown_weights_train_the_head_at_k0_and_predict_from_the_store(tmp_path, caplog):
    store = make_store(tmp_path / "f.zarr", weights="simulated")
    run = tmp_path / "runs" / "r"
    with caplog.at_level("WARNING"):
        result = train(tmp_path, "--features", store, "--rounds", 0, "--out", run)
    assert result.exit_code == 0, result.output
    assert "model.pt predicts from feature stores only" in caplog.text
    assert json.loads((run / "config.json").read_text())["weights"] == "simulated"
    out = tmp_path / "pred.csv"
    result = CliRunner().invoke(
        main, ["predict", str(store), "--model", str(run), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = out.read_text().splitlines()
    assert len(rows) == N and rows[0].startswith("00.jpg, ")
    other = make_store(tmp_path / "other.zarr", weights="random")  # another backbone's features
    result = CliRunner().invoke(
        main, ["predict", str(other), "--model", str(run), "--out", str(out)]
    )
    one_line_error(result, "was made with weights 'random' but the model was trained on a store")
    assert out.read_text().splitlines() == rows  # the old predictions are left as they were
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "a.jpg").write_bytes(b"x")  # an empty folder is refused first, before the model
    result = CliRunner().invoke(main, ["predict", str(images), "--model", str(run)])
    one_line_error(result, f"{run} holds only the head")


def test_screen_refuses_a_store_from_other_shards(tmp_path):
    store = make_store(tmp_path / "f.zarr", fingerprint="fp-old")
    shards = make_manifest(tmp_path / "shards", fingerprint="fp-new")
    out = tmp_path / "screen"
    result = CliRunner().invoke(main, ["screen", "--features", str(store), "--shards", str(shards),
                                       "--out", str(out)])  # fmt: skip
    one_line_error(result, f"feature store {store} was not made from the shards in {shards}")
    assert not out.exists()


def test_config_that_is_not_json_is_one_line(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"train": ')
    result = train(tmp_path, "--config", config)
    one_line_error(result, f"--config {config} is not a JSON file")
    config.write_text("[]")
    one_line_error(train(tmp_path, "--config", config), "must hold a JSON object, got list")


def test_unknown_weights_at_k1_are_refused_before_a_run_folder(tmp_path):
    store = make_store(tmp_path / "f.zarr", weights="simulated", depth=1)
    result = train(tmp_path, "--features", store, "--rounds", 0, "--unfreeze-last", 1)
    one_line_error(result, "was made with weights 'simulated'; pass that file with --weights")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"0003, Daisy\n0010 only\n", "names.csv:2: expected 'folder, class name'"),
        ("0003, Gänseblümchen\n".encode("latin-1"), "is not UTF-8 text"),
    ],
)
def test_bad_class_names_leave_no_run_folder(tmp_path, content, message):
    store = make_store(tmp_path / "f.zarr")
    names = tmp_path / "names.csv"
    names.write_bytes(content)
    result = train(tmp_path, "--features", store, "--class-names", names, "--rounds", 0)
    one_line_error(result, message)
    assert not (tmp_path / "runs").exists()


def test_unknown_screen_key_in_config_is_one_line(tmp_path):
    store = make_store(tmp_path / "f.zarr")
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"screen": {"knn": 5}}))
    result = train(tmp_path, "--features", store, "--config", config)
    one_line_error(result, "unknown key(s) knn in config section 'config.screen'; valid: ")
    assert not (tmp_path / "runs").exists()


def test_a_failure_after_validation_marks_the_run_failed(tmp_path, monkeypatch):
    import heads.trainer

    def broken_fit(*args, checkpoint_dir=None, **kwargs):
        Path(checkpoint_dir).mkdir(parents=True)  # it had started: something to resume
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(heads.trainer, "fit", broken_fit)
    store = make_store(tmp_path / "f.zarr")
    run = tmp_path / "runs" / "r"
    result = train(tmp_path, "--features", store, "--rounds", 0, "--out", run)
    assert result.exit_code != 0 and isinstance(result.exception, RuntimeError)
    failed = json.loads((run / "failed.json").read_text())
    assert failed == {"error": "RuntimeError: disk on fire"}
    assert not (tmp_path / "runs" / "latest").exists()


def test_a_failure_with_nothing_to_resume_removes_the_run(tmp_path, monkeypatch):
    import heads.trainer

    monkeypatch.setattr(heads.trainer, "fit", lambda *a, **k: (_ for _ in ()).throw(OSError("x")))
    store = make_store(tmp_path / "f.zarr")
    result = train(tmp_path, "--features", store, "--rounds", 0)
    assert isinstance(result.exception, OSError)
    assert list((tmp_path / "runs").iterdir()) == []


def test_matching_store_trains_stamps_its_weights_and_random_text_is_off(
    tmp_path, monkeypatch, caplog
):
    import features.text

    def no_text(*args, **kwargs):
        raise AssertionError("text embeddings of a random text tower were used")

    monkeypatch.setattr(features.text, "class_text_embeddings", no_text)
    store = make_store(tmp_path / "f.zarr")
    make_manifest(tmp_path / "shards")  # the shards it was made from: accepted
    names = tmp_path / "names.csv"
    names.write_text("0003, daisy\n0010, rose\n0042, tulip\n")
    run = tmp_path / "runs" / "r"
    with caplog.at_level("WARNING"):
        result = train(tmp_path, "--features", store, "--class-names", names, "--rounds", 0,
                       "--out", run)  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["weights"] == "random"  # the store's, not the option's default "openai"
    assert (run / "model.pt").is_file() and not (run / "failed.json").exists()
    assert (tmp_path / "runs" / "latest").resolve() == run.resolve()
    assert "with --weights random the zero-shot signal and the text-initialised head are off" in (
        caplog.text
    )


def test_config_json_with_screening_remakes_the_run(tmp_path, monkeypatch):
    """Issue 14.1: config.json stored the probe as a repr string; re-running crashed."""
    import heads.screen

    seen = []

    def fake_screening(inputs, cfg, train_fn, out_dir):
        seen.append(cfg)
        return SimpleNamespace(targets=None, weights=None)

    monkeypatch.setattr(heads.screen, "run_screening", fake_screening)
    import heads.screen.page  # the page of a real screening result (its own tests cover it)

    monkeypatch.setattr(heads.screen.page, "write_screening_page",
                        lambda *a, **k: SimpleNamespace(html="page.html", note=None))  # fmt: skip
    store = make_store(tmp_path / "f.zarr")
    first, again = tmp_path / "runs" / "first", tmp_path / "runs" / "again"
    assert train(tmp_path, "--features", store, "--rounds", 1, "--out", first).exit_code == 0
    result = train(tmp_path, "--config", first / "config.json", "--out", again)
    assert result.exit_code == 0, result.output
    assert seen[0] == seen[1] and seen[1].rounds == 1
    assert (first / "config.json").read_text() == (again / "config.json").read_text()


def test_a_weights_file_is_stamped_by_its_path_so_config_finds_it(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"stands in for a checkpoint")
    store = make_store(tmp_path / "f.zarr", weights="w.pt")
    run = tmp_path / "runs" / "r"
    result = train(tmp_path, "--features", store, "--rounds", 0, "--weights", weights, "--out", run)
    assert result.exit_code == 0, result.output
    stamped = json.loads((run / "config.json").read_text())["weights"]
    assert (run / stamped).resolve() == weights.resolve()  # relative to config.json's folder
