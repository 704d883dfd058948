"""Options that agree across commands: names users type, one-line refusals, checked early."""

from __future__ import annotations

import sys
import types

import pytest
from click.testing import CliRunner

from engine.cli import main


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("option", ["--out", "--runs"])
def test_train_output_below_a_file_fails_before_any_work(tmp_path, option):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = blocker / "r"
    result = _invoke("train", "--features", tmp_path / "none.zarr", option, target)
    assert result.exit_code == 1
    assert f"{option} {target}: {blocker} is a file, not a folder" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert blocker.read_text() == "x" and not (tmp_path / "none.zarr").exists()


def test_shard_short_side_message_names_the_option(tmp_path):
    result = _invoke("shard", tmp_path, "--short-side", 10)
    assert result.exit_code != 0
    assert "--short-side" in result.output
    assert "must be 0 (keep every size) or >= 32 pixels, got 10" in result.output
    assert "short_side" not in result.output and "None" not in result.output


@pytest.fixture
def registered_extras(monkeypatch):
    """Screening extras as the screening package registers them (names only matter here)."""
    import heads.screen

    module = types.ModuleType("heads.screen.extras")
    module.available = lambda: ["dfr", "srrs-mixup"]
    monkeypatch.setitem(sys.modules, "heads.screen.extras", module)
    monkeypatch.setattr(heads.screen, "extras", module, raising=False)


@pytest.mark.parametrize("command", ["train", "screen"])
def test_unknown_screen_extra_names_the_valid_ones(registered_extras, command):
    result = _invoke(command, "--screen-extra", "dfr", "--screen-extra", "magic")
    assert result.exit_code != 0
    assert "unknown extra(s) magic; valid: dfr, srrs-mixup" in result.output


def _merged(**given) -> dict:
    """`engine train`'s merged settings with every option at its default but `given`."""
    import click

    from engine.commands.train import command, merge_settings

    ctx = click.Context(command)
    options = {p.name: p.get_default(ctx) for p in command.params}
    ctx.params = options
    for p in command.params:
        ctx.set_parameter_source(p.name, click.core.ParameterSource.DEFAULT)
    options["screen_extra"] = ()
    options.update(given)
    return merge_settings(ctx, options)


def test_screen_extras_reach_the_screen_section(registered_extras):
    settings = _merged(screen_extra=("dfr", "srrs-mixup"))
    assert settings["screen"] == {"extras": ["dfr", "srrs-mixup"]}
    assert settings["features"] == "work/features/train.zarr" and settings["train"] == {}


@pytest.mark.parametrize(("flag", "file", "want"), [
    (False, None, None), (False, {"mixture": {"gate": "knn"}}, None),
    (True, {"mixture": None}, {}), (True, {"mixture": {"gate": "knn"}}, {"gate": "knn"}),
])  # fmt: skip
def test_folder_mixture_flag_reaches_the_screen_section(registered_extras, flag, file, want,
                                                       tmp_path):  # fmt: skip
    """--no-folder-mixture writes `mixture: null`; --folder-mixture brings back a config
    file's settings, or the defaults where the file switched it off."""
    import json

    config = None
    if file is not None:
        config = tmp_path / "config.json"
        config.write_text(json.dumps({"screen": file}))
    settings = _merged(folder_mixture=flag, config=config)
    assert settings["screen"]["mixture"] == want


@pytest.mark.parametrize("command", ["train", "screen"])
def test_the_old_folder_mixture_extra_says_where_it_went(command):
    result = _invoke(command, "--screen-extra", "folder-mixture")
    assert result.exit_code != 0
    assert "folder-mixture is no extra any more" in result.output
    assert "--no-folder-mixture" in result.output
