"""`engine.registry`: duplicates refused, unknown names answered with the valid ones, and the
heads, losses, signals and extras all built on it."""

import pytest

from engine.errors import UserError
from engine.registry import Registry


def test_register_get_names_and_order():
    reg = Registry("widget")
    reg.register("b")(2)
    reg.register("a")(1)
    assert reg.get("a") == 1 and "b" in reg and "c" not in reg
    assert reg.names() == ["a", "b"]  # sorted, for a CLI's choices
    assert [name for name, _ in reg.items()] == ["b", "a"]  # registration order


def test_duplicate_name_is_refused_and_first_entry_kept():
    reg = Registry("widget")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register("a")(2)
    assert reg.get("a") == 1


def test_unknown_name_lists_the_valid_ones_with_the_chosen_error():
    reg = Registry("widget", error=UserError)
    reg.register("x")(1)
    reg.register("y")(2)
    with pytest.raises(UserError) as err:
        reg.get("z")
    assert str(err.value) == "unknown widget 'z'; choose one of ['x', 'y']"
    with pytest.raises(LookupError, match="unknown gadget 'q'"):
        Registry("gadget").get("q")


def test_project_registries_refuse_duplicates():
    from heads.head import HEADS, register_head
    from heads.losses import LOSSES, register_loss
    from heads.screen.evidence import SIGNALS
    from heads.screen.extras import EXTRAS, register_extra

    for registry, register, name in ((HEADS, register_head, "cosine"), (LOSSES, register_loss, "gce"),
                                     (EXTRAS, register_extra, "dfr")):  # fmt: skip
        with pytest.raises(ValueError, match="already registered"):
            register(name)(object)
        assert registry.get(name) is not object
    assert SIGNALS.names() == ["knn", "model", "prototype", "zero_shot"]
    with pytest.raises(
        UserError, match=r"unknown loss 'mse'; choose one of \['ce', 'gce', 'sce'\]"
    ):
        LOSSES.get("mse")


def test_bench_stages_refuse_a_duplicate_and_keep_their_order():
    from bench import suite

    names = list(suite.STAGES)
    assert names[:3] == ["shard", "decode", "trunk"] and names[-1] == "host"
    with pytest.raises(ValueError, match="bench stage 'shard' is already registered"):
        suite.stage("shard")(lambda ctx: [])
    with pytest.raises(ValueError, match=r"unknown bench stage 'nope'; choose one of \["):
        suite.run_stage("nope", None)
