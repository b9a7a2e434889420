"""The layers stay as designed: pure modules do no I/O imports, emulators share no code with
what they emulate for, and nothing below the planner knows about OpenCTI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "reconciler"
IO_LIBS = {"httpx", "pycti", "msal", "requests", "urllib3", "socket", "http", "apscheduler"}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", ["model", "mapping", "plan", "report", "scope"])
def test_pure_modules_import_no_io_library(module: str) -> None:
    bad = {n for n in imports_of(PKG / f"{module}.py") if n.split(".")[0] in IO_LIBS}
    assert not bad, f"{module}.py imports {bad}"


@pytest.mark.parametrize("module", ["model", "mapping", "plan", "report", "apply", "scope"])
def test_nothing_below_the_planner_imports_adapters(module: str) -> None:
    bad = {
        n
        for n in imports_of(PKG / f"{module}.py")
        if n.startswith(("reconciler.opencti", "reconciler.defender", "reconciler.sandbox"))
    }
    assert not bad, f"{module}.py imports {bad}"


@pytest.mark.parametrize("path", sorted((PKG / "sandbox").glob("*.py")), ids=lambda p: p.name)
def test_sandbox_imports_nothing_from_the_rest(path: Path) -> None:
    bad = {
        n
        for n in imports_of(path)
        if n.startswith("reconciler") and not n.startswith("reconciler.sandbox")
    }
    assert not bad, f"{path.name} imports {bad}"
