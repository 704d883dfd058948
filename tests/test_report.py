"""`heads.report`: report.png from a run folder written in the other stages' own formats."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from engine.jsonfile import write_json
from engine.runs import append_jsonl
from heads.metrics import evaluate
from heads.report import TITLES, build_figure, load_run, write_report
from heads.screen.partition import STATES
from heads.screen.suspects import write_scores

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _texts(ax) -> str:
    return " ".join(t.get_text() for t in ax.texts)


def _write_rounds(run, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Two screening rounds through heads.screen's own writer; returns the last states."""
    from heads.screen.report import save_round, summarise, write_summary

    rng = np.random.default_rng(0)
    history = []
    state = np.zeros(len(labels), np.int8)
    for r in range(2):
        state = rng.integers(0, 5, len(labels)).astype(np.int8)
        targets = np.eye(num_classes, dtype=np.float32)[labels]
        save_round(
            run / "rounds", r, state=state, weights=rng.uniform(0, 1, len(labels)).astype(np.float32),
            targets=targets, proposed=labels, labels=labels,
        )  # fmt: skip
        history.append({"round": r, "changed": 1.0, **summarise(state, labels, num_classes)})
    write_summary(run / "rounds", history)
    write_scores(run / "rounds", SimpleNamespace(  # what heads.screen.page saves at the end
        state=state, combined=rng.uniform(0, 1, len(labels)), p_clean=rng.uniform(0, 1, len(labels)),
        scores={"knn": rng.uniform(0, 1, len(labels))}))  # fmt: skip
    return state


@pytest.fixture
def full_run(tmp_path):
    """A run folder with every file the report reads, each in its writer's format."""
    from heads.metrics import evaluate

    run = tmp_path / "run"
    counts = np.array([40, 20, 10, 5, 3, 2])  # a long tail, max/min = 20
    labels = np.repeat(np.arange(len(counts)), counts)
    write_json(run / "config.json", {"train": {"unfreeze_last": 2, "loss": "gce"}, "rounds": 2})
    for epoch, phase in enumerate(["lp", "lp", "ft"]):
        append_jsonl(
            run / "metrics.jsonl",
            {
                "epoch": epoch,
                "loss": 2.0 - epoch / 2,
                "train_acc": 0.3 + epoch / 10,
                "phase": phase,
            },
        )
    _write_rounds(run, labels, len(counts))
    truth = {f"{i}.jpg": f"{i % 6:04d}" for i in range(30)}
    pred = {n: (c if i % 3 else "0000") for i, (n, c) in enumerate(truth.items())}
    write_json(run / "eval.json", evaluate(pred, truth))
    return run, counts


def test_full_run_has_every_panel_with_data(full_run):
    run, counts = full_run
    data = load_run(run)
    np.testing.assert_array_equal(data.class_counts, counts)
    assert [r["round"] for r in data.rounds] == [0, 1]
    assert [h["phase"] for h in data.history] == ["lp", "lp", "ft"]
    name, values, state = data.scores  # the screening score, not the sample weight
    assert name.startswith("screening score")
    with np.load(run / "rounds" / "scores.npz") as saved:
        np.testing.assert_array_equal(values, saved["combined"])
        np.testing.assert_array_equal(state, saved["state"])
    fig = build_figure(data)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == list(TITLES.values())
    panels = dict(zip(TITLES, fig.axes[:6], strict=True))
    assert all("no data" not in _texts(ax) for ax in panels.values())
    assert panels["classes"].get_yscale() == "linear"
    assert "max/min = 40/2 = 20" in _texts(panels["classes"])
    # scores panel: one histogram per state present, each over that state's score values
    legend = [t.get_text() for t in panels["scores"].get_legend().get_texts()]
    present = [s for s in range(5) if (state == s).any()]
    assert legend == [f"{STATES[s]} ({(state == s).sum()})" for s in present]
    # per-round counts: 4 stacked series x 2 rounds
    assert len(panels["rounds"].patches) == 5 * 2  # every state (out-of-set too) x 2 rounds
    assert [t.get_text() for t in panels["groups"].get_xticklabels()] == ["head", "medium", "tail"]
    assert "unfreeze_last: 2" in _texts(panels["summary"])


def test_write_report_makes_a_png(full_run):
    run, _ = full_run
    path = write_report(run)
    assert path == run / "report.png"
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 10_000
    assert not list(run.glob("*.tmp*"))


def test_missing_data_panels_say_so(tmp_path):
    run = tmp_path / "empty_run"
    run.mkdir()
    fig = build_figure(load_run(run))
    panels = dict(zip(TITLES, fig.axes[:6], strict=True))
    for key in ("classes", "scores", "rounds", "curves", "groups"):
        assert "no data" in _texts(panels[key]), key
    assert "metrics.jsonl" in _texts(panels["curves"])
    assert write_report(run).read_bytes()[:8] == PNG_MAGIC


def test_partial_run_metrics_json_and_manifest_counts(tmp_path):
    """A run with only metrics.json (no jsonl) and class counts from the shard manifest."""
    shards = tmp_path / "shards"
    write_json(shards / "manifest.json", {"class_counts": {"a": 7, "b": 3, "c": 1}})
    run = tmp_path / "run"
    write_json(run / "config.json", {"shards": str(shards), "train": {}})
    history = [{"epoch": 0, "loss": 1.0, "train_acc": 0.5, "phase": "lp"}]
    write_json(run / "metrics.json", {"history": history, "store": "x.zarr"})
    data = load_run(run)
    np.testing.assert_array_equal(data.class_counts, [7, 3, 1])
    assert data.history == history and data.rounds is None and data.evaluation is None
    fig = build_figure(data)
    panels = dict(zip(TITLES, fig.axes[:6], strict=True))
    assert "no data" not in _texts(panels["curves"])
    assert "no data" in _texts(panels["rounds"]) and "no data" in _texts(panels["groups"])


def test_unreadable_json_is_skipped_not_fatal(tmp_path, caplog):
    """A broken config.json costs only its own panel lines: it is named in a warning, and
    the accuracy panel still draws from eval.json."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{not json")
    truth = {f"{i}.jpg": f"{i % 6:04d}" for i in range(30)}
    write_json(run / "eval.json", evaluate(truth, truth))
    with caplog.at_level("WARNING"):
        data = load_run(run)
    assert f"cannot read {run / 'config.json'}" in caplog.text
    assert data.config == {} and data.evaluation["top1"] == 1.0
    panels = dict(zip(TITLES, build_figure(data).axes[:6], strict=True))
    assert "no data" not in _texts(panels["groups"])
    assert "unfreeze_last" not in _texts(panels["summary"])
    assert write_report(run).read_bytes()[:8] == PNG_MAGIC


def test_class_panel_ratio_is_the_true_one(tmp_path):
    """39 / 28 images is a ratio of 1.39, not the `max/min = 1` of a rounded log axis."""
    run = tmp_path / "run"
    write_json(run / "manifest.json", {"class_counts": {"a": 39, "b": 30, "c": 28}})
    panels = dict(zip(TITLES, build_figure(load_run(run)).axes[:6], strict=True))
    assert "max/min = 39/28 = 1.39" in _texts(panels["classes"])
    assert [p.get_height() for p in panels["classes"].patches] == [39, 30, 28]


def test_eval_json_into_a_run_folder_redraws_its_report(full_run, tmp_path):
    from click.testing import CliRunner

    from engine.cli import main

    run, _ = full_run
    (run / "eval.json").unlink()
    write_report(run)
    assert load_run(run).evaluation is None
    pred, labels = tmp_path / "pred.csv", tmp_path / "labels.csv"
    pred.write_text("a.jpg, 0000\nb.jpg, 0001\nc.jpg, 0001\n")
    labels.write_text("a.jpg, 0000\nb.jpg, 0001\nc.jpg, 0000\n")
    before = (run / "report.png").stat().st_mtime_ns
    out = CliRunner().invoke(main, ["eval", str(pred), str(labels), "--json", str(run / "my.json")])
    assert out.exit_code == 0, out.output
    assert f"report: {run / 'report.png'}" in out.output
    assert (run / "report.png").stat().st_mtime_ns > before
    data = load_run(run, evaluation=run / "my.json")
    panels = dict(zip(TITLES, build_figure(data).axes[:6], strict=True))
    assert "no data" not in _texts(panels["groups"])
    assert data.evaluation["top1"] == pytest.approx(2 / 3)


def test_round_bars_add_up_to_the_samples(full_run):
    """The per-round panel stacks every state's count, out-of-set included."""
    from heads.report import _panel_rounds

    class Axes:
        def __init__(self):
            self.bars = {}

        def bar(self, x, values, bottom, label):
            self.bars[label] = np.asarray(values)

        def __getattr__(self, name):  # ticks, labels, legend: not what this test checks
            return lambda *a, **k: None

    run, _ = full_run
    data = load_run(run)
    ax = Axes()
    _panel_rounds(ax, data)
    assert set(ax.bars) == {"clean", "ambiguous", "relabeled", "dropped", "out-of-set"}
    samples = [r["all"]["samples"] for r in data.rounds]
    np.testing.assert_array_equal(sum(ax.bars.values()), samples)
