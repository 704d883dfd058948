"""bench.relabel_variants: the variant names map to the stage's options, and the tables of
bench/NOISY.md come from its JSON lines."""

import json
import pickle

import pytest

from bench.relabel_variants import compare, stage_config, summary, table


def test_variant_names_map_to_the_stage_options():
    k_all = stage_config("gauss", "k-all")
    assert (k_all.rows, k_all.gate, k_all.use_student) == ("all", "knn", False)
    sk = stage_config("poe4", "sk")
    assert (sk.rows, sk.gate, sk.use_student) == ("flagged", "student+knn", True)
    assert sk.options.gaussian_temperature == 4.0
    assert stage_config("student", "none").options.gaussian_temperature > 1e5
    one = stage_config("gauss+modes=1+mode_penalty=0.25", "none")
    assert (one.options.modes, one.options.mode_penalty, one.gate) == (1, 0.25, "off")
    with pytest.raises(KeyError):
        stage_config("gauss", "some")


def _line(cell, variant, before, after):
    return json.dumps(dict(cell=cell, variant=variant, before=before, after=after,
                           delta=after - before, closed=(after - before) / (0.9 - before),
                           perfect=0.8, oracle=0.9, precision=0.95, recall=0.7, named=0.5))  # fmt: skip


def test_table_and_summary_from_json_lines(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("\n".join([_line("c1", "gauss:none", 0.7, 0.66), _line("c1", "gauss:k-all", 0.7, 0.72),
                              _line("c2", "gauss:none", 0.6, 0.7), _line("c2", "gauss:k-all", 0.6, 0.61),
                              "not json"]))  # fmt: skip
    rows = table([out]).splitlines()
    assert len(rows) == 2 + 4 and "| c1 | gauss:k-all | 70.00 | 72.00 | +2.00 | 10% |" in rows[2]
    for c in ("c1", "c2"):
        (tmp_path / f"{c}.pkl").write_bytes(pickle.dumps(
            {"row": dict(before=0.7, perfect=0.8, oracle=0.9, precision=1.0, recall=0.6)}))  # fmt: skip
    text = summary([out], tmp_path, variants=("gauss:none", "gauss:k-all"))
    assert "gauss:k-all: mean +1.50 pts, worst +1.00" in text
    assert "gauss:none: mean +3.00 pts, worst -4.00" in text


def test_compare_measures_every_variant_against_the_default(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("\n".join([_line("c1", "gauss:none", 0.7, 0.76), _line("c1", "gauss:k-all", 0.7, 0.72),
                              _line("c2", "gauss:none", 0.6, 0.7), _line("c2", "gauss:k-all", 0.6, 0.702),
                              _line("c3", "gauss:k-all", 0.6, 0.9)]))  # fmt: skip
    rows = compare([out], "gauss:none").splitlines()
    # c3 has no default row: left out; k-all is 4.0 and -0.2 points off the default, so the
    # default loses more than 0.3 in no cell.
    assert rows[2] == "| gauss:k-all | 2 | -1.90 | -4.00 | 0 | 22% / 32% |"
