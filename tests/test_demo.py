"""`engine demo`: its options, and the loud switch to random weights when none are cached.

The whole demo runs in CI (`make demo` in .ci/run), so it cannot rot.
"""

from click.testing import CliRunner

from engine.cli import main
from engine.commands import demo


def test_help_explains_the_flow():
    result = CliRunner().invoke(main, ["demo", "--help"])
    assert result.exit_code == 0
    assert "shard -> train -> predict -> eval -> bench" in result.output
    assert "--weights" in result.output


def test_auto_weights_fall_back_to_random_loudly(monkeypatch, capsys):
    import features.model

    monkeypatch.setattr(features.model, "openai_weights_cached", lambda: False)
    assert demo.resolve_weights("auto") == "random"
    assert "RANDOM" in capsys.readouterr().out


def test_auto_weights_use_cached_openai(monkeypatch):
    import features.model

    monkeypatch.setattr(features.model, "openai_weights_cached", lambda: True)
    assert demo.resolve_weights("auto") == "openai"
    assert demo.resolve_weights("/some/file.pt") == "/some/file.pt"
