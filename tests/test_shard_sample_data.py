"""shards.sample_data: deterministic, long-tailed, noisy on request, with hidden test labels."""

from __future__ import annotations

from shards.sample_data import ODD_KINDS, make_sample_dataset


def _tree(root):
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    make_sample_dataset(tmp_path / "a", n_classes=4, max_per_class=6, n_test=8, seed=3)
    make_sample_dataset(tmp_path / "b", n_classes=4, max_per_class=6, n_test=8, seed=3)
    make_sample_dataset(tmp_path / "c", n_classes=4, max_per_class=6, n_test=8, seed=4)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert _tree(tmp_path / "a") != _tree(tmp_path / "c")


def test_layout_long_tail_noise_and_label_files(tmp_path):
    info = make_sample_dataset(
        tmp_path, n_classes=6, max_per_class=30, min_per_class=2, noise=0.3, n_test=12
    )
    assert info.classes == [f"{k:04d}" for k in range(6)]
    assert sorted(p.name for p in info.train_dir.iterdir()) == info.classes
    clean = {
        c: n - sum(1 for f in info.odd_files if f.startswith(c))
        for c, n in info.train_counts.items()
    }
    assert sum(clean.values()) == 30 + 17 + 10 + 6 + 3 + 2  # geometric tail from 30 down to 2
    truth = dict(
        line.split(", ") for line in (tmp_path / "train_truth.csv").read_text().splitlines()
    )
    per_true_class = [sum(1 for t in truth.values() if t == c) for c in info.classes]
    assert per_true_class == [30, 17, 10, 6, 3, 2]
    wrong = {p: t for p, t in truth.items() if p.split("/")[0] != t}
    assert wrong == info.noisy and 0.15 < len(wrong) / len(truth) < 0.45
    assert set(info.odd_files.values()) == set(ODD_KINDS)
    rows = (tmp_path / "test_labels.csv").read_text().splitlines()
    assert len(rows) == 12 and rows[0] == f"00000.jpg, {info.test_labels['00000.jpg']}"
    assert sorted(p.name for p in info.test_dir.iterdir()) == sorted(info.test_labels)
    assert sorted(info.test_labels.values()) == sorted(info.classes * 2)  # class-balanced
