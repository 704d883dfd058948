"""`bench.noisy_bench` really runs every method on a tiny generated set and scores it."""

import numpy as np

from bench.noisy_bench import GRIDS, format_rows, main, run_setting
from heads.screen import ScreenConfig

METHODS = [
    "CE (probe)",
    "cleanlab + CE (probe)",
    "CE (engine trainer)",
    "cleanlab + CE (trainer)",
    "engine train alone",
    "engine + screening",
    "engine + folder mixture",
    "perfect screening",
    "oracle (clean labels)",
]


def test_every_method_scored_on_a_tiny_set():
    rows = run_setting(12, 5, 0.3, 30, cfg=ScreenConfig(rounds=1), flip_prior="size",
                       variant="realistic")  # fmt: skip
    assert [r["method"] for r in rows] == METHODS
    top1 = {r["method"]: r["top1"] for r in rows}
    assert all(0 <= v <= 1 for v in top1.values())
    # Clean labels are worth more than noisy ones even on 12 classes.
    assert top1["oracle (clean labels)"] > top1["CE (engine trainer)"]
    assert top1["perfect screening"] > top1["CE (engine trainer)"]
    for r in rows:
        if "cleanlab" in r["method"] or r["method"] == "engine + screening":
            assert 0 < r["precision"] <= 1 and 0 < r["recall"] <= 1
    assert {r["flip_prior"] for r in rows} == {"size"}
    assert {r["variant"] for r in rows} == {"realistic"}
    mixed = next(r for r in rows if r["method"] == "engine + folder mixture")
    assert 0 < mixed["named"] <= 1 and 0 < mixed["precision"] <= 1
    assert "engine + folder mixture" in format_rows(rows)


def test_without_baselines_only_the_engine_and_the_bounds_run():
    rows = run_setting(12, 5, 0.3, 30, cfg=ScreenConfig(rounds=1), baselines=False)
    assert [r["method"] for r in rows] == METHODS[4:]
    assert {r["variant"] for r in rows} == {"plain"}


def test_each_grid_runs_settings_spanning_the_issue_ranges(monkeypatch, capsys):
    """`--grid mission|small` hands run_setting settings from 200 to 1500 classes, imbalance
    1 to 100 and noise 10% to 60%, each with the ScreenConfig that `--set` asked for."""
    import bench.noisy_bench as nb

    for name in ("mission", "small"):
        seen = []

        def fake_setting(classes, imbalance, noise, max_per_class, cfg=None, seen=seen, **kw):
            seen.append((classes, imbalance, noise, cfg.knn_k))
            return [{"classes": classes, "imbalance": imbalance, "noise": noise, "N": 1,
                     "method": "CE (probe)", "top1": 0.5}]  # fmt: skip

        monkeypatch.setattr(nb, "run_setting", fake_setting)
        main(["--grid", name, "--set", "knn_k=7"])
        got = np.array([s[:3] for s in seen], dtype=float)
        assert got[:, 0].min() == 200 and got[:, 0].max() == 1500  # classes
        assert got[:, 1].min() == 1 and got[:, 1].max() == 100  # imbalance
        assert got[:, 2].min() == 0.1 and got[:, 2].max() == 0.6  # noise
        assert {s[3] for s in seen} == {7}
        assert len(capsys.readouterr().out.splitlines()) == 2 + len(seen)
        assert len(seen) == 2 * len(GRIDS[name])  # every setting on plain and realistic


def test_cli_rejects_unknown_flip_prior(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["--flip-prior", "popular"])
    assert "invalid choice" in capsys.readouterr().err


def test_cli_prints_each_setting_as_it_finishes(monkeypatch, capsys):
    import bench.noisy_bench as nb

    def fake_setting(classes, imbalance, noise, max_per_class, variant="plain", **kw):
        base = {"classes": classes, "imbalance": imbalance, "noise": noise, "N": 7,
                "variant": variant}  # fmt: skip
        return [{**base, "method": m, "top1": 0.5} for m in METHODS]

    monkeypatch.setattr(nb, "run_setting", fake_setting)
    main(["--grid", "quick", "--flip-prior", "size", "--variant", "realistic"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["variant", "K", "imb", "noise", "N"]
    body = lines[2:]
    assert len(body) == len(GRIDS["quick"]) * len(METHODS)
    assert all(line.startswith("realistic") for line in body)
    assert all(line.rstrip().endswith("50.0") for line in body)


def test_cli_builds_the_screen_config_from_extra_and_set(monkeypatch, capsys):
    import pytest

    import bench.noisy_bench as nb

    seen = {}

    def fake_run(grid, seed, cfg, flip_prior, on_setting, variants, baselines):
        seen.update(grid=grid, cfg=cfg, variants=variants, baselines=baselines)
        return []

    monkeypatch.setattr(nb, "run", fake_run)
    main(["--quick", "--extra", "dfr", "--extra", "srrs-verify", "--set", "knn_k=5"])
    assert seen["grid"] == GRIDS["quick"]
    assert seen["cfg"].extras == ("dfr", "srrs-verify") and seen["cfg"].knn_k == 5
    assert seen["variants"] == ("plain", "realistic") and seen["baselines"]
    main(["--quick", "--variant", "plain", "--no-baselines"])
    assert seen["variants"] == ("plain",) and not seen["baselines"]
    with pytest.raises(SystemExit):
        main(["--extra", "dfrr"])
    assert "invalid choice: 'dfrr'" in capsys.readouterr().err
