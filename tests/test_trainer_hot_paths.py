"""The trainer's hot paths (issue 20 items 10 and 11, issue 21 item 7): L2-SP as one flat
op, tokens cast once, index targets instead of a dense one-hot, no hash without a checkpoint,
prototypes where the embeddings are, and a non-finite loss stopping the fit in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import heads.problem
from engine.errors import UserError
from features.store import FeatureStore
from heads import epoch, tensors
from heads.classes import one_hot_targets
from heads.config import TrainConfig
from heads.head import class_prototypes
from heads.losses import L2SP, l2sp_penalty
from heads.problem import make_problem, prototypes, select_rows
from heads.trainer import fit

CPU = torch.device("cpu")


def _data(n=60, k=5, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    x = np.eye(k, dim)[labels] * 2 + rng.standard_normal((n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return FeatureStore.from_arrays(
        embed=x.astype(np.float16), labels=labels, classes=[f"c{i}" for i in range(k)]
    )


def _per_parameter_l2sp(params, anchors, strength):
    """The loop L2-SP used to be: 3 kernels per parameter."""
    total = sum(
        (p.float() - p0.float()).pow(2).sum() for p, p0 in zip(params, anchors, strict=True)
    )
    return 0.5 * strength * total


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:  # views launch nothing
            self.ops.append(func)
        return func(*args, **(kwargs or {}))


def test_flat_l2sp_equals_the_per_parameter_loop_in_value_and_gradient():
    gen = torch.Generator().manual_seed(0)
    shapes = [(7, 3), (3,), (4, 4, 2), (1,)]
    anchors = [torch.randn(s, generator=gen) for s in shapes]
    params = [(a + 0.1 * torch.randn(s, generator=gen)).requires_grad_() for a, s in
              zip(anchors, shapes, strict=True)]  # fmt: skip
    new = L2SP(params, anchors, 0.3)()
    g_new = torch.autograd.grad(new, params)
    old = _per_parameter_l2sp(params, anchors, 0.3)
    g_old = torch.autograd.grad(old, params)
    torch.testing.assert_close(new, old, rtol=1e-6, atol=1e-7)
    for a, b in zip(g_new, g_old, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert l2sp_penalty(anchors, anchors, 0.3).item() == 0.0  # exactly 0 at init


def test_l2sp_kernels_do_not_grow_with_the_number_of_parameters():
    def ops(count):
        anchors = [torch.randn(8) for _ in range(count)]
        params = [(a + 1).requires_grad_() for a in anchors]
        penalty = L2SP(params, anchors, 0.1)
        with _CountOps() as mode:
            penalty().backward()
        return len(mode.ops)

    assert ops(60) == ops(6) <= 12  # the loop took ~3 per parameter forward alone: 180+


def test_tokens_are_cast_once_to_the_compute_dtype():
    assert tensors.compute_dtype(torch.device("cuda")) == torch.bfloat16  # autocast's dtype
    assert tensors.compute_dtype(CPU) == torch.float32
    tok = torch.randn(2, 5, 4).half()
    assert tensors.to_compute(tok, CPU).dtype == torch.float32


def test_hard_labels_stay_index_targets_and_equal_the_dense_one_hot_path():
    data = _data()
    sel = select_rows(data, None, None, None)
    problem = make_problem(sel, CPU)
    assert sel.soft is None and problem.soft is None and problem.labels.shape == (60,)
    t, _, hard = problem.batch(slice(0, 7))
    assert torch.equal(t, torch.from_numpy(one_hot_targets(data.labels[:7], 5)))
    assert torch.equal(hard, torch.from_numpy(data.labels[:7]).long())
    cfg = TrainConfig(epochs_lp=3, batch_size=16, loss="gce")
    index = fit(data, cfg)
    dense = fit(data, cfg, targets=one_hot_targets(data.labels, 5))  # the old path's targets
    np.testing.assert_allclose(index.predict_logits(data), dense.predict_logits(data), atol=1e-5)
    np.testing.assert_allclose([h["loss"] for h in index.history],
                               [h["loss"] for h in dense.history], rtol=1e-6)  # fmt: skip
    assert index.class_counts == dense.class_counts == [12.0] * 5


def test_no_inputs_hash_without_a_checkpoint(monkeypatch, tmp_path):
    hashed = []
    monkeypatch.setattr(heads.problem, "fingerprint", lambda *a: hashed.append(1) or "x")
    fit(_data(), TrainConfig(epochs_lp=1))
    assert hashed == []
    fit(_data(), TrainConfig(epochs_lp=1), checkpoint_dir=tmp_path / "ckpt")
    assert hashed == [1]  # a checkpoint to guard: hashed once


@pytest.mark.parametrize("soft", [False, True])
def test_prototypes_on_the_device_equal_the_host_ones(soft):
    data = _data()
    rng = np.random.default_rng(1)
    weights = rng.uniform(0.1, 1, 60).astype(np.float32)
    targets = rng.dirichlet(np.ones(5), 60).astype(np.float32) if soft else None
    targets_dense = targets if soft else one_hot_targets(data.labels, 5)
    targets_dense[:, 4] = 0 if soft else targets_dense[:, 4]  # an empty class when soft
    sel = select_rows(data, targets, weights, None)
    embed = torch.from_numpy(data.embed.astype(np.float32))
    got = prototypes(embed, make_problem(sel, CPU), sel.class_counts())
    expected = class_prototypes(data.embed.astype(np.float32), targets_dense, weights)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)


def test_a_non_finite_loss_stops_the_fit_in_one_line(monkeypatch, tmp_path):
    def nan_loss(loss_fn, logits, *args):
        return logits.sum() * float("nan")

    monkeypatch.setattr(epoch, "weighted_loss", nan_loss)
    with pytest.raises(UserError) as err:
        fit(_data(), TrainConfig(epochs_lp=2), checkpoint_dir=tmp_path / "ckpt")
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("training diverged: the loss of epoch 0 is nan; lower lr_head")
    assert not (tmp_path / "ckpt" / "last.pt").exists()  # no NaN model is kept to resume
