"""`heads.classes`: the one class-prototypes, class-ranks and class-groups helpers."""

import numpy as np
import torch

from heads.classes import class_groups, class_prototypes, class_ranks
from heads.head import class_prototypes as head_prototypes


def _unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_class_ranks_order_each_class_by_key_with_ties_by_index():
    key = np.array([5.0, 1.0, 3.0, 10.0, 0.0, 7.0, 1.0])
    labels = np.array([0, 0, 0, 1, 1, 2, 0])
    order, rank = class_ranks(key, labels, 4)
    assert order.tolist() == [1, 6, 2, 0, 4, 3, 5]
    assert rank.tolist() == [3, 0, 2, 1, 0, 0, 1]
    _, high_first = class_ranks(-key, labels, 4)  # ties (1.0 twice) still by index
    assert high_first.tolist() == [0, 2, 1, 0, 1, 0, 3]


def test_hard_and_soft_prototypes_are_the_same_unit_means():
    rng = np.random.default_rng(0)
    x = _unit(rng.standard_normal((40, 6)).astype(np.float32))
    y = np.arange(40) % 4
    y[y == 3] = 2  # class 3 is empty: a zero row
    want = np.stack([x[y == c].sum(0) for c in range(4)])
    want[:3] = _unit(want[:3])
    hard = class_prototypes(torch.from_numpy(x), torch.from_numpy(y), num_classes=4)
    soft = class_prototypes(torch.from_numpy(x), torch.eye(4)[torch.from_numpy(y)])
    np.testing.assert_allclose(hard.numpy(), want, atol=1e-6)
    np.testing.assert_allclose(soft.numpy(), want, atol=1e-6)


def test_weighted_soft_prototypes_and_the_head_adapter():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((12, 5)).astype(np.float32) * 3  # not unit: the head normalises
    t = rng.dirichlet(np.ones(3), 12).astype(np.float32)
    t[:, 2] = 0  # class 2 gets no weight: the head gives it the mean direction
    w = rng.random(12).astype(np.float32)
    xu = _unit(x)
    want = _unit(((t * w[:, None]).T @ xu)[:2])
    got = class_prototypes(torch.from_numpy(xu), torch.from_numpy(t), torch.from_numpy(w))
    np.testing.assert_allclose(got.numpy()[:2], want, atol=1e-6)
    assert not got[2].any()
    head = head_prototypes(x, t, w)
    np.testing.assert_allclose(head[:2], want, atol=1e-6)
    np.testing.assert_allclose(head[2], _unit(xu.mean(0, keepdims=True))[0], atol=1e-6)


def test_class_groups_are_thirds_by_count():
    counts = {"x": 5, "y": 500, "z": 50, "w": 1, "v": 1000, "u": 2, "t": 50}
    groups = class_groups(counts)
    assert [c for c in sorted(counts, key=lambda c: (-counts[c], c))] == list(groups)
    assert list(groups.values()) == ["head"] * 3 + ["medium"] * 2 + ["tail"] * 2
    assert groups["t"] == "head" and groups["z"] == "medium"  # a tie goes by name


def test_class_members_match_the_screening_report_and_the_old_thirds():
    from heads.classes import class_members  # what the screening report and page call

    counts = np.array([5, 500, 50, 1, 1000, 2, 50])
    members = class_members(counts)
    assert {g: m.tolist() for g, m in members.items()} == {
        "head": [4, 1, 2], "medium": [6, 0], "tail": [5, 3]}  # fmt: skip
    # The thirds the screening report used before: np.array_split of the stable sort.
    for k in range(1, 12):
        c = np.random.default_rng(k).integers(0, 5, k)
        old = np.array_split(np.argsort(-c, kind="stable"), 3)
        got = class_members(c)
        for g, part in zip(("head", "medium", "tail"), old, strict=True):
            assert got[g].tolist() == part.tolist()
