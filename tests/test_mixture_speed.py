"""bench.mixture_speed: the folder-mixture stage's cost figures (bench/NOISY.md, "Cost")."""

from bench.mixture_speed import main, measure


def test_measure_reports_the_start_a_pass_and_the_flop_of_the_whole_em():
    r = measure(classes=6, per_class=40, rows=100, dim=16)
    assert (r["N"], r["K"], r["rows"]) == (240, 6, 100)
    assert 1 <= r["M"] <= 4 and min(r["start_s"], r["pass_s"], r["m_step_s"]) > 0
    # 16 passes of 4 N D K M + 2 N D^2 FLOP
    assert r["tflop"] * 1e12 == 16 * (4 * 240 * 16 * 6 * r["M"] + 2 * 240 * 16 * 16)
    assert r["total_s"] > 16 * r["pass_s"]  # extrapolated from 100 rows to 240


def test_cli_prints_one_line(capsys):
    main(["--classes", "4", "--per-class", "20", "--rows", "50"])
    out = capsys.readouterr().out
    assert out.startswith("N=80 K=4 sub-mean slots M=") and "TFLOP" in out
