"""`engine eval`'s one strict reader of `name, 0042` files (heads.id_rows), through the CLI."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from engine.cli import main

ROWS = {"a.jpg": "0001", "b.jpg": "0002", "c.jpg": "0003", "d.jpg": "0001"}
PRED = {"a.jpg": "0001", "b.jpg": "0002", "c.jpg": "0003", "d.jpg": "0002"}  # 3 of 4 right


def _write(path, text: str, bom: bool = False) -> str:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return str(path)


def _lines(rows: dict) -> str:
    return "".join(f"{k}, {v}\n" for k, v in rows.items())


def _eval(tmp_path, pred: str, labels: str, *, bom: bool = False):
    args = ["eval", _write(tmp_path / "p.csv", pred), _write(tmp_path / "l.csv", labels, bom)]
    return CliRunner().invoke(main, args)


def _top1(result) -> float:
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("top-1")]
    return float(line.split()[-1])


def _refused(result, *texts: str) -> None:
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    for text in texts:
        assert text in result.output, result.output


def test_a_byte_order_mark_loses_no_row(tmp_path):
    assert _top1(_eval(tmp_path, _lines(PRED), _lines(ROWS), bom=True)) == 0.75
    both = tmp_path / "b"
    both.mkdir()
    args = [
        "eval",
        _write(both / "p.csv", _lines(PRED), True),
        _write(both / "l.csv", _lines(ROWS)),
    ]
    assert _top1(CliRunner().invoke(main, args)) == 0.75


def test_numeric_ids_are_normalised_to_four_digits(tmp_path):
    unpadded = {name: str(int(cid)) for name, cid in PRED.items()}  # "1" for "0001"
    assert _top1(_eval(tmp_path, _lines(unpadded), _lines(ROWS))) == 0.75
    _refused(_eval(tmp_path, "a.jpg, 12345\n", _lines(ROWS)), "p.csv:1", "more than four digits")


def test_conflicting_duplicate_label_rows_are_refused(tmp_path):
    labels = _lines(ROWS) + "a.jpg, 0003\n"
    _refused(_eval(tmp_path, _lines(PRED), labels), "l.csv:5", "'a.jpg'", "line 1")
    repeated = _lines(ROWS) + "a.jpg, 1\n"  # the same class again: one row, no conflict
    assert _top1(_eval(tmp_path, _lines(PRED), repeated)) == 0.75


@pytest.mark.parametrize(
    ("line", "why"),
    [("a.jpg, cat", "class 'cat' is not a 4-digit class id"), ("a.jpg, ", "empty class"),
     (" , 0001", "empty file name"), ("a.jpg 0001", "expected 'name, class'")],
)  # fmt: skip
def test_bad_ids_and_names_are_refused_naming_the_line(tmp_path, line, why):
    labels = _lines({"b.jpg": "0002"}) + line + "\n"
    _refused(_eval(tmp_path, _lines(PRED), labels), f"{tmp_path / 'l.csv'}:2", why)
    _refused(_eval(tmp_path, line + "\n", _lines(ROWS)), f"{tmp_path / 'p.csv'}:1", why)


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    labels = tmp_path / "u16.csv"
    labels.write_text(_lines(ROWS), encoding="utf-16")
    result = CliRunner().invoke(main, ["eval", _write(tmp_path / "p.csv", _lines(PRED)),
                                       str(labels)])  # fmt: skip
    _refused(result, f"labels file {labels} is UTF-16 text; save it as UTF-8")
