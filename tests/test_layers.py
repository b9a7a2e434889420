"""The layers stay as designed: pure modules do no I/O imports, emulators share no code with
what they emulate for, nothing below the planner knows about OpenCTI, settings are read in one
place, and the controller leaves reading, mapping and planning to the engine."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "reconciler"
IO_LIBS = {"httpx", "pycti", "msal", "requests", "urllib3", "socket", "http", "apscheduler"}
ADAPTERS = ("reconciler.opencti", "reconciler.defender", "reconciler.sandbox")


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def files_of(*names: str) -> list[Path]:
    """The module ``name.py``, or every module of the package ``name/``."""
    found: list[Path] = []
    for name in names:
        package = PKG / name
        found += sorted(package.rglob("*.py")) if package.is_dir() else [PKG / f"{name}.py"]
    return found


def rel(path: Path) -> str:
    return str(path.relative_to(PKG))


PURE = files_of(
    "model",
    "defaults",
    "mapping",
    "plan",
    "report",
    "scope",
    "explain",
    "owned",
    "writeback",
    "sightings",
)
BELOW_THE_PLANNER = files_of(
    "model", "defaults", "mapping", "plan", "report", "apply", "scope", "explain", "owned"
)
SANDBOX = files_of("sandbox")


@pytest.mark.parametrize("path", PURE, ids=rel)
def test_pure_modules_import_no_io_library(path: Path) -> None:
    bad = {n for n in imports_of(path) if n.split(".")[0] in IO_LIBS}
    assert not bad, f"{rel(path)} imports {bad}"


@pytest.mark.parametrize("path", BELOW_THE_PLANNER, ids=rel)
def test_nothing_below_the_planner_imports_adapters(path: Path) -> None:
    bad = {n for n in imports_of(path) if n.startswith(ADAPTERS)}
    assert not bad, f"{rel(path)} imports {bad}"


@pytest.mark.parametrize("path", SANDBOX, ids=rel)
def test_sandbox_imports_nothing_from_the_rest(path: Path) -> None:
    bad = {
        n
        for n in imports_of(path)
        if n.startswith("reconciler") and not n.startswith("reconciler.sandbox")
    }
    assert not bad, f"{rel(path)} imports {bad}"


def test_the_packages_are_covered() -> None:
    """A module added to a package is checked without editing this file."""
    assert len([p for p in PURE if "mapping" in p.parts]) >= 7
    assert len([p for p in PURE if "plan" in p.parts]) >= 6
    assert len(SANDBOX) >= 20


#: Modules that may hold a ``Settings`` value: the settings package, the one reader that turns
#: it into typed arguments, and the command-line entry points that load it and hand it over.
SETTINGS_HOLDERS = {"wiring.py", "service.py", "cli.py", "checks.py", "demo.py"}


@pytest.mark.parametrize(
    "path",
    [p for p in files_of(*(p.stem for p in PKG.glob("*.py")), "mapping", "plan", "opencti")],
    ids=rel,
)
def test_settings_are_read_only_by_wiring(path: Path) -> None:
    """Components get typed arguments: only the entry points know ``Settings`` exists."""
    if rel(path) in SETTINGS_HOLDERS or rel(path).startswith("config"):
        return
    text = path.read_text()
    assert "reconciler.config" not in imports_of(path), rel(path)
    assert "getattr(cfg" not in text and "from_settings" not in text, rel(path)


def test_the_controller_does_no_reading_mapping_or_planning() -> None:
    bad = {
        n
        for n in imports_of(PKG / "controller.py")
        if n.startswith(("reconciler.mapping", "reconciler.plan", "reconciler.scope"))
        or n.startswith(ADAPTERS)
    }
    assert not bad, f"controller.py imports {bad}"


def test_the_controller_knows_leader_election_only_through_its_protocol() -> None:
    bad = {
        n
        for n in imports_of(PKG / "controller.py")
        if n in ("reconciler.leader", "reconciler.lease")
    }
    assert not bad, f"controller.py imports {bad}"


def top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", files_of(*(p.stem for p in PKG.glob("*.py"))), ids=rel)
def test_kubernetes_is_imported_lazily_and_only_for_leases(path: Path) -> None:
    """``reconciler --help`` and the one-shot commands never load kubernetes_asyncio: only
    ``lease`` imports it, and ``lease`` is imported inside the functions that need it."""
    if rel(path) != "lease.py":
        assert not {n for n in imports_of(path) if n.startswith("kubernetes")}, rel(path)
    assert "reconciler.lease" not in top_level_imports(path), rel(path)
