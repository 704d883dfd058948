"""Screening rounds end to end on small generated sets with known noise, and the CLI."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from bench.synthetic import make_noisy_features
from engine.cli import main
from heads.screen import STATES, ScreenConfig, ScreenInputs, run_screening
from heads.screen.probe import ProbeConfig
from heads.screen.report import load_targets
from shards.decode.preprocess import PREPROCESS

FAST = ProbeConfig(steps=15)


@pytest.fixture(scope="module")
def data():
    return make_noisy_features(num_classes=20, dim=32, imbalance=10, max_per_class=40,
                               noise=0.4, sigma=1.2, nuisance=0.5, spread=0.7, seed=0)  # fmt: skip


@pytest.fixture(scope="module")
def screened(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("screen")
    inputs = ScreenInputs(data.embed, data.labels, 20, data.text_embed)
    return run_screening(inputs, ScreenConfig(rounds=2, probe=FAST), None, out), out


def test_detection_precision_and_recall_floors(data, screened):
    result, _ = screened
    flagged = result.state >= STATES.index("relabeled")
    hits = (flagged & data.is_noisy).sum()
    assert hits / flagged.sum() >= 0.9  # precision floor (measured 1.0)
    assert hits / data.is_noisy.sum() >= 0.45  # recall floor (measured 0.51)
    moved = result.state == STATES.index("relabeled")
    assert (result.proposed[moved] == data.true_labels[moved]).mean() >= 0.7  # measured 0.88


def test_every_class_keeps_samples_and_rounds_are_saved(data, screened):
    result, out = screened
    kept = np.bincount(data.labels[result.weights > 0], minlength=20)
    assert (kept >= 3).all()
    summary = json.loads((out / "summary.json").read_text())
    last = len(summary["rounds"]) - 1
    np.testing.assert_array_equal(np.load(out / f"round_{last}" / "state.npy"), result.state)
    # The final targets are the relabeling stage's (on by default), saved beside the rounds.
    np.testing.assert_allclose(load_targets(out / "mixture" / "target.npz"), result.targets)
    assert not np.allclose(load_targets(out / f"round_{last}" / "target.npz"), result.targets)
    entry = summary["rounds"][-1]
    assert sum(entry[g]["samples"] for g in ("head", "medium", "tail")) == len(data.labels)
    assert entry["all"]["clean"] == int((result.state == 0).sum())


def test_same_seed_identical_results(data, screened):
    inputs = ScreenInputs(data.embed, data.labels, 20, data.text_embed)
    again = run_screening(inputs, ScreenConfig(rounds=2, probe=FAST))
    np.testing.assert_array_equal(again.state, screened[0].state)
    np.testing.assert_array_equal(again.targets, screened[0].targets)


def test_round_counts_partition_the_samples(data, screened):
    """The five states (partition.STATES, the one vocabulary: summary.json, class_counts.json
    and the page use its names) add up to the samples in every group (out-of-set samples
    were counted inside `dropped` too, so the parts added up to more)."""
    result, out = screened
    summary = json.loads((out / "summary.json").read_text())
    parts = STATES
    for entry in summary["rounds"]:
        for group in ("all", "head", "medium", "tail"):
            assert sum(entry[group][p] for p in parts) == entry[group]["samples"]
    last = summary["rounds"][-1]["all"]
    want = np.bincount(result.state, minlength=len(STATES)).tolist()
    assert [last[p] for p in parts] == want and want[STATES.index("out_of_set")] > 0
    assert set(last) == {"samples", *STATES}  # no second name for a state
    counts = json.loads(
        (out / f"round_{len(summary['rounds']) - 1}" / "class_counts.json").read_text()
    )
    assert tuple(counts["states"]) == STATES


def test_signals_are_registered_and_combined_in_registration_order(data, screened):
    from heads.screen.evidence import SIGNALS, register_signal

    assert [name for name, _ in SIGNALS.items()] == ["knn", "prototype", "zero_shot", "model"]
    assert list(screened[0].scores) == ["knn", "prototype", "zero_shot", "model"]
    with pytest.raises(ValueError, match="screening signal 'knn' is already registered"):
        register_signal("knn")(lambda inputs, cfg, logits: None)
    no_text = run_screening(ScreenInputs(data.embed, data.labels, 20), ScreenConfig(rounds=0))
    assert list(no_text.scores) == ["knn", "prototype", "model"]  # zero-shot needs text


def test_rounds_stop_when_few_states_change(data):
    calls = []

    def frozen_train_fn(train_idx, targets, weights):
        calls.append(len(train_idx))
        return lambda idx: np.eye(20, dtype=np.float32)[data.labels[idx]] * 5

    inputs = ScreenInputs(data.embed, data.labels, 20)
    result = run_screening(inputs, ScreenConfig(rounds=5, probe=FAST), frozen_train_fn)
    # The same model every round: round 2 repeats round 1 exactly, so screening stops there.
    assert [r["round"] for r in result.rounds] == [0, 1, 2]
    assert result.rounds[-1]["changed"] == 0.0 and len(calls) == 4


def _make_store(path, data):
    from features.store import FeatureStore, StoreSpec

    n = len(data.labels)
    spec = StoreSpec(n=n, chunk_n=n, depth=0, views=1, classes=[f"{c:04d}" for c in range(20)],
                     weights={"name": "random", "sha256": None}, preprocess=PREPROCESS,
                     embed_dim=data.embed.shape[1])  # fmt: skip
    store = FeatureStore.create(path, spec)
    store.write_chunk(0, keys=[f"k{i}" for i in range(n)],
                      paths=[f"{data.labels[i]:04d}/img{i}.jpg" for i in range(n)],
                      labels=data.labels.astype(np.int32), embed=data.embed.astype(np.float16))  # fmt: skip
    store.mark_complete()


def test_cli_show_lists_the_least_trusted_with_the_train_class_names(tmp_path, data):
    """--show N: the N lowest-trust samples, their given label by the `folder, name` CSV that
    `engine train` reads (BOM, quoted comma), the state saved for the last round."""
    runner = CliRunner()
    assert "--show" in runner.invoke(main, ["screen", "--help"]).output
    _make_store(tmp_path / "s.zarr", data)
    names = tmp_path / "names.csv"
    rows = ['0000, "daisy, ox-eye"'] + [f"{c:04d}, species {c}" for c in range(1, 19)]
    names.write_bytes(("\ufeff" + "\n".join(rows) + "\n").encode("utf-8"))  # 0019 unnamed
    res = runner.invoke(main, ["screen", "--features", str(tmp_path / "s.zarr"), "--rounds", "1",
                               "--out", str(tmp_path / "out"), "--show", "8",
                               "--class-names", str(names)])  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[1].split("\t")[:5] == ["path", "given", "proposed", "state", "trust"]
    shown = [line.split("\t") for line in lines[2:-1]]
    assert len(shown) == 8
    page = tmp_path / "out" / "suspects.html"  # the last line names the page (no shards here)
    why = "no thumbnails: the store records no shards folder; pass --shards"
    assert lines[-1] == f"suspects page: {page} ({why})"
    assert page.is_file() and (tmp_path / "out" / "suspects.csv").is_file()
    trust = [float(cells[4]) for cells in shown]
    assert trust == sorted(trust)  # least trusted first
    state = np.load(tmp_path / "out" / "round_1" / "state.npy")
    display = ["daisy, ox-eye"] + [f"species {c}" for c in range(1, 19)] + ["0019"]
    for cells in shown:
        i = int(cells[0].split("img")[1].removesuffix(".jpg"))
        assert cells[1] == display[data.labels[i]]
        assert cells[3] == STATES[state[i]]
    names.write_text("0000, daisy\n0001\n")
    bad = runner.invoke(main, ["screen", "--features", str(tmp_path / "s.zarr"),
                               "--class-names", str(names), "--out", str(tmp_path / "o3")])  # fmt: skip
    assert bad.exit_code == 1 and "names.csv:2: expected 'folder, class name'" in bad.output
    assert not (tmp_path / "o3").exists()


def test_cli_runs_the_folder_mixture_stage_unless_switched_off(tmp_path, data):
    runner = CliRunner()
    assert "--no-folder-mixture" in runner.invoke(main, ["screen", "--help"]).output
    _make_store(tmp_path / "s.zarr", data)
    said = {}
    for flag, out in ((), "on"), (("--no-folder-mixture",), "off"):
        res = runner.invoke(main, ["screen", "--features", str(tmp_path / "s.zarr"), "--rounds",
                                   "1", "--out", str(tmp_path / out), *flag])  # fmt: skip
        assert res.exit_code == 0, res.output
        said[out] = res.output.splitlines()[0]
    on = json.loads((tmp_path / "on" / "summary.json").read_text())
    assert (tmp_path / "on" / "mixture" / "mixture_class.npy").is_file()
    assert f"folder mixture: {on['mixture']['moved']} named another class" in said["on"]
    assert not (tmp_path / "off" / "mixture").exists() and "folder mixture" not in said["off"]
    assert "mixture" not in json.loads((tmp_path / "off" / "summary.json").read_text())


def test_device_reaches_the_probe_and_is_checked():
    from heads.screen import rounds

    seen = []

    class Stop(Exception):
        pass

    def spy(embed, cfg, **options):  # records, then stops before any work on "cuda:1"
        seen.append((cfg.steps, options["device"], options["seed"]))
        raise Stop

    cfg = ScreenConfig(rounds=0, device="cuda:1", seed=4, probe={"steps": 3})
    with pytest.MonkeyPatch.context() as patch, pytest.raises(Stop):
        patch.setattr(rounds, "probe_train_fn", spy)
        run_screening(ScreenInputs(np.eye(4, dtype=np.float32), np.arange(4), 4), cfg)
    assert seen == [(3, "cuda:1", 4)]  # the probe's device and seed are the screening's
    with pytest.raises(ValueError, match="device must be auto, cpu or cuda"):
        ScreenConfig(device="tpu")
    res = CliRunner().invoke(main, ["screen", "--device", "tpu"])
    assert res.exit_code == 1 and "--device" in res.output


@pytest.mark.gpu
def test_screening_on_cuda_matches_the_cpu(data, screened):
    """kNN, probe and partition on the GPU: the same states as on the CPU, bar float ties."""
    inputs = ScreenInputs(data.embed, data.labels, 20, data.text_embed)
    on_gpu = run_screening(inputs, ScreenConfig(rounds=2, probe=FAST, device="cuda"))
    on_cpu = run_screening(inputs, ScreenConfig(rounds=2, probe=FAST, device="cpu"))
    assert (on_gpu.state == on_cpu.state).mean() >= 0.99
