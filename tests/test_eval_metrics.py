"""`engine eval` and heads.metrics on hand-made predictions."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from engine.cli import main
from heads.metrics import REPORT_KEYS, class_groups, evaluate

LABELS = {
    "a.jpg": "0001",
    "b.jpg": "0001",
    "c.jpg": "0002",
    "d.jpg": "0003",
    "e.jpg": "0003",
    "f.jpg": "0003",
}
PRED = {"a.jpg": "0001", "b.jpg": "0002", "c.jpg": "0002", "d.jpg": "0003", "e.jpg": "0001"}


def test_evaluate_by_hand():
    report = evaluate(PRED, LABELS)
    assert report["top1"] == pytest.approx(3 / 6)  # f.jpg missing counts as wrong
    assert report["per_class"] == {"0001": 0.5, "0002": 1.0, "0003": pytest.approx(1 / 3)}
    assert report["balanced_accuracy"] == pytest.approx((0.5 + 1.0 + 1 / 3) / 3)
    assert report["missing"] == 1 and report["extra"] == 0
    # by label frequency: 0003 (3) head, 0001 (2) medium, 0002 (1) tail
    assert report["groups"]["head"]["balanced_accuracy"] == pytest.approx(1 / 3)
    assert report["groups"]["tail"]["balanced_accuracy"] == 1.0


def test_groups_follow_training_counts():
    groups = class_groups({"x": 5, "y": 500, "z": 50, "w": 1, "v": 1000, "u": 2})
    assert groups == {
        "v": "head",
        "y": "head",
        "z": "medium",
        "x": "medium",
        "u": "tail",
        "w": "tail",
    }
    report = evaluate(PRED, LABELS, {"0001": 1.0, "0002": 100.0, "0003": 10.0})
    assert report["groups"]["head"]["balanced_accuracy"] == 1.0  # 0002 is the head now


def test_eval_cli(tmp_path):
    pred = tmp_path / "pred.csv"
    labels = tmp_path / "labels.csv"
    pred.write_text("".join(f"{k}, {v}\n" for k, v in PRED.items()))
    labels.write_text("".join(f"{k}, {v}\n" for k, v in LABELS.items()))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps({"classes": ["1", "2", "3"], "class_counts": {"1": 1, "2": 100, "3": 10}})
    )
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        main, ["eval", str(pred), str(labels), "--train-counts", str(manifest), "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "top-1             0.5000" in result.output
    assert json.loads(out.read_text())["groups"]["head"]["balanced_accuracy"] == 1.0
    bad = tmp_path / "bad.csv"
    bad.write_text("no comma here\n")
    result = CliRunner().invoke(main, ["eval", str(bad), str(labels)])
    assert result.exit_code == 1 and "expected lines 'name.jpg, 0042'" in result.output
    assert CliRunner().invoke(main, ["eval", "--help"]).exit_code == 0


def test_report_keys_name_what_evaluate_returns():
    assert set(evaluate(PRED, LABELS)) == REPORT_KEYS


def _eval_inputs(tmp_path):
    pred, labels = tmp_path / "pred.csv", tmp_path / "labels.csv"
    pred.write_text("".join(f"{k}, {v}\n" for k, v in PRED.items()))
    labels.write_text("".join(f"{k}, {v}\n" for k, v in LABELS.items()))
    return str(pred), str(labels)


@pytest.mark.parametrize(
    "content",
    [b"my notes, not a report\n", b'{"top1": 0.9, "note": "my own numbers"}\n', b"\xff\xfe"],
)
def test_eval_json_never_overwrites_a_users_file(tmp_path, content):
    pred, labels = _eval_inputs(tmp_path)
    mine = tmp_path / "notes.json"
    mine.write_bytes(content)
    result = CliRunner().invoke(main, ["eval", pred, labels, "--json", str(mine)])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: --json {mine} exists and is not an `engine eval` report; the engine does not "
        "overwrite it: choose another file name\n"
    )
    assert mine.read_bytes() == content  # byte for byte


def test_eval_json_rewrites_its_own_report(tmp_path):
    pred, labels = _eval_inputs(tmp_path)
    out = tmp_path / "eval.json"
    out.write_text(json.dumps({k: 0 for k in REPORT_KEYS}))  # an earlier run's report
    result = CliRunner().invoke(main, ["eval", pred, labels, "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["top1"] == evaluate(PRED, LABELS)["top1"]
    assert "report:" not in result.output  # not a run folder: no report.png redrawn
