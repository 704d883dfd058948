"""Imports say what a module depends on: at the top of library modules, deferred only in the
CLI (so that `--help` stays instant) or where a `# deferred: <reason>` comment says why."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("shards", "features", "heads", "bench", "engine")
HEAVY = ("torch", "zarr", "open_clip", "nvidia.dali")
# The CLI defers its heavy imports by design; its modules are checked by the --help test instead.
CLI = ("engine/cli.py", "engine/commands/")
# `train` and `screen` list the head, loss and screening-signal registries in their --help.
LISTS_REGISTRIES = {"train", "screen"}


def _modules_after_help(args: list[str]) -> list[str]:
    code = (
        "import sys; from click.testing import CliRunner; from engine.cli import main;"
        f"r = CliRunner().invoke(main, {args!r}); assert r.exit_code == 0, r.output;"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return out.stdout.strip()


@pytest.mark.parametrize("name", sorted(set(COMMANDS) - LISTS_REGISTRIES))
def test_subcommand_help_imports_no_heavy_module(name):
    assert _modules_after_help([name, "--help"]) == "[]"


def test_top_level_help_imports_no_heavy_module():
    assert _modules_after_help(["--help"]) == "[]"


def function_level_imports(source: str) -> list[tuple[int, str]]:
    """(line, source line) of every import inside a function, without a `deferred:` reason
    on one of its lines."""
    lines = source.splitlines()
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if in_function and isinstance(child, ast.Import | ast.ImportFrom):
                text = lines[child.lineno - 1 : child.end_lineno]
                if not any("# deferred: " in line for line in text):
                    found.append((child.lineno, text[0].strip()))
            visit(child, inside)

    visit(ast.parse(source), False)
    return found


def _library_files() -> list[Path]:
    files = []
    for package in LIBRARIES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith(CLI):
                files.append(path)
    return files


def test_library_imports_are_at_the_top_or_say_why():
    unexplained = {}
    for path in _library_files():
        rel = path.relative_to(ROOT).as_posix()
        found = function_level_imports(path.read_text())
        if found:
            unexplained[rel] = found
    assert not unexplained, (
        "move these imports to the top of their module, or add `# deferred: <reason>`: "
        f"{unexplained}"
    )


def test_the_check_finds_an_unexplained_import():
    source = (
        "import os\n\n"
        "def f():\n    import json\n    return json\n\n"
        "def g():\n    import torch  # deferred: off the --help path\n    return torch\n\n"
        "class C:\n    def h(self):\n        from x import (\n            y,\n        )\n"
    )
    assert function_level_imports(source) == [(4, "import json"), (13, "from x import (")]
