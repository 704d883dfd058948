"""`--class-names`: one `folder, name` CSV format for train and screen."""

from __future__ import annotations

import pytest

from engine.classnames import names_in_class_order, read_class_names
from engine.errors import UserError


def test_bom_quotes_comments_and_blank_lines(tmp_path):
    path = tmp_path / "names.csv"
    text = '\ufeff# folder, name\n0001, daisy\n\n0042,"daisy, ox-eye"\n  0100 ,  "rose"  \n'
    path.write_bytes(text.encode("utf-8"))
    assert read_class_names(path) == {"0001": "daisy", "0042": "daisy, ox-eye", "0100": "rose"}


def test_names_in_class_order_keep_unnamed_folders():
    names, missing = names_in_class_order({"b": "bee"}, ["a", "b"])
    assert names == ["a", "bee"] and missing == ["a"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"0001, daisy\n0002\n", r"names.csv:2: expected 'folder, class name'"),
        (b"0001, daisy, extra\n", r"names.csv:1: expected 'folder, class name' \(quote a name"),
        (b"0001, daisy\n0001, rose\n", r"names.csv:2: folder '0001' is named twice"),
        ("0001, Gänseblümchen\n".encode("latin-1"), r"names.csv is not UTF-8 text \(byte 7\)"),
    ],
)
def test_bad_files_are_one_line_user_errors(tmp_path, content, message):
    path = tmp_path / "names.csv"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as err:
        read_class_names(path)
    assert "\n" not in str(err.value)
