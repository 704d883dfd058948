"""One thread budget for the features pass: the store writers, the feeder and the main loop get
their cores first, the decoder the rest, and `engine features` uses it by default."""

from __future__ import annotations

from test_features_extract import labeled, make_cfg  # noqa: F401  (module fixture)

from bench.tiny_clip import tiny_clip
from features.chunks import WRITERS
from features.extract import extract
from features.threads import thread_budget


def test_the_budget_never_oversubscribes_the_cores():
    big = thread_budget(16)
    assert big.writers == WRITERS and big.decode == 16 - WRITERS - 2
    assert big.decode + big.writers + big.feeder + big.main == 16
    assert thread_budget(2).decode == 1  # at least one decoder, however few the cores
    assert "16 cores: 10 decode" in str(big)


def test_extract_gives_the_decoder_the_budget_unless_workers_are_asked_for(
    labeled,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    import features.extract as extract_mod
    from shards.decode import make_loader

    monkeypatch.setattr(extract_mod, "thread_budget", lambda: thread_budget(16))
    asked = []

    def loader(shard_dir, **kwargs):
        asked.append(kwargs["workers"])
        return make_loader(shard_dir, **(kwargs | {"workers": 0}))

    extract(labeled, tmp_path / "a.zarr", make_cfg(workers=None), clip_loader=tiny_clip,
            loader_factory=loader)  # fmt: skip
    extract(labeled, tmp_path / "b.zarr", make_cfg(workers=3), clip_loader=tiny_clip,
            loader_factory=loader)  # fmt: skip
    assert asked == [10, 3]
