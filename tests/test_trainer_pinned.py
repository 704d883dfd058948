"""Seeded tiny fits pinned against a stored fixture: a refactor of the trainer (or a faster
kernel under it) must leave the trained weights as they were.

The fixture `fixtures/seeded_fits.npz` was written by `python tests/test_trainer_pinned.py`
before the trainer was split by idea (issue 19 item 7); the split reproduced it bit for bit
on the CPU. The tolerance admits only float32 rounding (summation order in the foreach L2-SP
and the label-count class prior, or another CPU's SIMD width), never a changed algorithm: the
fits move their weights by ~1e-1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from heads_helpers import features_from_images, tiny_visual

from heads.config import TrainConfig
from heads.trainer import fit

FIXTURE = Path(__file__).parent / "fixtures" / "seeded_fits.npz"
CLASSES = ["a", "b", "c", "d"]


def _runs():
    rng = np.random.default_rng(0)
    targets = rng.dirichlet(np.ones(4), 24).astype(np.float32)
    weights = rng.uniform(0, 1, 24).astype(np.float32)
    weights[:3] = 0
    soft = dict(targets=targets, weights=weights)
    return {
        "head": (TrainConfig(epochs_lp=3, batch_size=8, loss="gce", seed=5), soft),
        "head_default": (TrainConfig(epochs_lp=2, loss="ce", head="linear"), {}),
        "tail": (
            TrainConfig(
                unfreeze_last=1,
                epochs_lp=2,
                epochs_ft=2,
                batch_size=8,
                lr_tail=1e-3,
                loss="sce",
                seed=2,
            ),
            soft,
        ),  # fmt: skip
        "tail2": (
            TrainConfig(
                unfreeze_last=2,
                epochs_lp=1,
                epochs_ft=2,
                batch_size=8,
                lr_tail=1e-3,
                l2sp=1.0,
                loss="ce",
                views=1,
            ),
            dict(indices=np.arange(4, 24)),
        ),  # fmt: skip
    }


def seeded_fits() -> dict[str, np.ndarray]:
    """Every run's head (and tail) weights, epoch losses and logits, by name."""
    visual = tiny_visual()
    images = torch.randn(24, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    data = features_from_images(visual, images, np.arange(24) % 4, CLASSES, depth=2, views=2)
    out = {}
    for name, (cfg, kw) in _runs().items():
        model = fit(data, cfg, clip=visual, **kw)
        parts = {"head": model.head, "tail": model.tail}
        for part, module in parts.items():
            for key, value in (module.state_dict() if module is not None else {}).items():
                out[f"{name}/{part}/{key}"] = value.numpy()
        out[f"{name}/loss"] = np.array([h["loss"] for h in model.history])
        out[f"{name}/logits"] = model.predict_logits(data)
    return out


@pytest.mark.usefixtures("one_blas_thread")
def test_seeded_tiny_fits_match_the_pinned_fixture():
    pinned = np.load(FIXTURE)
    now = seeded_fits()
    assert sorted(now) == sorted(pinned.files)
    for key in pinned.files:
        np.testing.assert_allclose(now[key], pinned[key], rtol=1e-5, atol=2e-5, err_msg=key)


if __name__ == "__main__":  # re-pin: only when a change of results is intended and explained
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    FIXTURE.parent.mkdir(exist_ok=True)
    np.savez_compressed(FIXTURE, **seeded_fits())
