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
    assert "knn" in SIGNALS  # the core signals register on import
    with pytest.raises(UserError, match=r"unknown loss 'mse'; choose one of \["):
        LOSSES.get("mse")


@pytest.fixture
def new_entries(monkeypatch):
    """A loss, a head and a screening extra registered the way an extension would (removed
    again after the test)."""
    from heads.head import HEADS, CosineHead
    from heads.losses import LOSSES
    from heads.screen.extras import EXTRAS

    def margin_loss(m: float = 0.0, **_):
        return lambda logits, targets: -(targets * logits).sum(-1) + m

    for registry, name, obj in ((LOSSES, "margin", margin_loss), (HEADS, "wide", CosineHead),
                                (EXTRAS, "my-extra", EXTRAS.get("dfr"))):  # fmt: skip
        monkeypatch.setitem(registry._items, name, obj)
    return margin_loss


def test_a_new_registry_entry_appears_in_help_and_passes_validation(new_entries):
    from click.testing import CliRunner

    from engine.cli import main
    from heads.config import TrainConfig
    from heads.screen.config import ScreenConfig
    from heads.screen.probe import ProbeConfig

    # A wide terminal: click wraps help at hyphens, and the list grows with every extension.
    result = CliRunner().invoke(main, ["train", "--help"], terminal_width=1000)
    help_text = " ".join(result.output.split())
    for name in ("margin", "wide", "my-extra", "gce", "cosine", "dfr"):
        assert name in help_text, name
    cfg = TrainConfig(loss="margin", head="wide")
    assert (cfg.loss, cfg.head) == ("margin", "wide")
    assert ProbeConfig(loss="margin").loss == "margin"
    assert ScreenConfig(extras=("my-extra",)).extras == ("my-extra",)
    with pytest.raises(UserError, match=r"unknown head 'mlp'; choose one of \[.*'wide'"):
        TrainConfig(head="mlp")


def test_loss_options_reach_the_factory_from_the_config_by_name(new_entries):
    from types import SimpleNamespace

    from heads.losses import loss_from_config, loss_options

    assert loss_options("margin", SimpleNamespace(loss="margin", margin_m=0.25)) == {"m": 0.25}
    assert loss_options("margin", SimpleNamespace(loss="margin")) == {}  # factory default
    fn = loss_from_config(SimpleNamespace(loss="margin", margin_m=0.25))
    import torch

    assert fn(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])).item() == 0.25


def test_bench_stages_refuse_a_duplicate_and_keep_their_order():
    from bench import suite

    names = list(suite.STAGES)
    assert names[:3] == ["shard", "decode", "trunk"] and names[-1] == "host"
    with pytest.raises(ValueError, match="bench stage 'shard' is already registered"):
        suite.stage("shard")(lambda ctx: [])
    with pytest.raises(ValueError, match=r"unknown bench stage 'nope'; choose one of \["):
        suite.run_stage("nope", None)


def test_help_never_splits_a_registered_name_across_lines():
    from click.testing import CliRunner

    from engine.cli import main
    from engine.commands.options import extra_names, head_names, loss_names

    # The default 80 columns: click's own wrapping broke `srrs-mixup` at its hyphen.
    words = set(CliRunner().invoke(main, ["train", "--help"]).output.replace(",", " ").split())
    for name in (*extra_names(), *head_names(), *loss_names()):
        assert name in words or f"{name}." in words, name
