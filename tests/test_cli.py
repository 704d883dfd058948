"""The CLI skeleton: `--help` is instant and lists every subcommand."""

import pytest
from click.testing import CliRunner

from engine.cli import COMMANDS, main


def test_help_lists_every_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_unknown_command_is_a_usage_error():
    # one line and exit 1, like every other error a user can fix (click's own: 4 lines, 2)
    result = CliRunner().invoke(main, ["nonsense"])
    assert result.exit_code == 1
    assert result.output == "Error: No such command 'nonsense'. (see 'main --help')\n"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_subcommand_has_help(name):
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Usage: main {name}" in result.output or f"Usage: engine {name}" in result.output
    assert "--help" in result.output


def test_help_imports_no_heavy_module():
    """`engine --help` must stay instant: torch, DALI and open_clip load only when used."""
    import subprocess
    import sys

    code = (
        "import sys; from click.testing import CliRunner; from engine.cli import main;"
        "CliRunner().invoke(main, ['--help']);"
        "print(sorted(m for m in ('torch', 'open_clip', 'nvidia.dali', 'zarr') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
