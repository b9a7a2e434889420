"""The ``reconciler`` command line (thin: parse, load config, call, render, exit code).

Results (plans, reports, check results) go to stdout; logs and errors to stderr. A
``ReconcilerError`` ends as one clear line and exit 1 (``--debug`` adds the traceback, never
locals). Exit codes: 0 done / nothing to do; 1 error or failed items; 2 changes pending
(``plan --detailed-exitcode``); 3 a guard held deletes back (``apply``).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from reconciler import __version__
from reconciler.errors import ReconcilerError
from reconciler.gcpause import map_large_allocations

if TYPE_CHECKING:  # imported lazily at run time: `reconciler --help` stays fast
    from reconciler.config import Settings
    from reconciler.plan import Plan

__all__ = ["app", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_GUARD = 3

app = typer.Typer(
    name="reconciler",
    help="Keep Microsoft Defender for Endpoint indicators equal to what OpenCTI says.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
sandbox_app = typer.Typer(
    help="Run the built-in emulators (real HTTP servers on 127.0.0.1) for trials and demos.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(sandbox_app, name="sandbox")


class Output(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML config file (default: ./config.yml when present). Env vars override it.",
        envvar="RECONCILER_CONFIG",
        show_envvar=True,
    ),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
NoColorOpt = Annotated[bool, typer.Option("--no-color", help="Plain text output (also NO_COLOR).")]


def _use_color(no_color: bool) -> bool:
    if no_color or os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return sys.stdout.isatty()


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _guarded(debug: bool, body: Callable[[], int]) -> int:
    """Run a command body; turn errors into one line on stderr and an exit code."""
    try:
        return body()
    except ReconcilerError as exc:
        if debug:
            traceback.print_exc(file=sys.stderr)
        _fail(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except Exception as exc:  # last resort: one line, no locals, no secrets in our messages
        if debug:
            traceback.print_exc(file=sys.stderr)
        _fail(f"unexpected {type(exc).__name__}: {exc} (run with --debug for details)")
        return EXIT_ERROR


def _load(config: Path | None) -> Settings:
    from reconciler.config import load_settings
    from reconciler.wiring import configure_logs

    settings = load_settings(config)
    configure_logs(settings)
    return settings


@contextmanager
def _progress() -> Iterator[Callable[[str], None] | None]:
    """A transient spinner on stderr while both sides are read, only on a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("starting")
        yield lambda text: bar.update(task, description=text)


def _render(plan: Plan, output: Output, *, color: bool) -> str:
    from reconciler import report

    if output is Output.json:
        return report.render_json(plan)
    if output is Output.markdown:
        return report.render_markdown(plan)
    return report.render_text(plan, color=color)


def _exit(code: int) -> None:
    raise typer.Exit(code)


@app.command()
def plan(
    config: ConfigOpt = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="Report format.")] = Output.text,
    out: Annotated[
        Path | None, typer.Option("--out", help="Save the plan (JSON) for `apply --plan`.")
    ] = None,
    detailed_exitcode: Annotated[
        bool,
        typer.Option("--detailed-exitcode", help="Exit 2 when changes are pending, 0 when none."),
    ] = False,
    explain: Annotated[
        str | None,
        typer.Option(
            "--explain",
            metavar="VALUE",
            help="Explain one value (IP, domain, URL or hash): the OpenCTI indicators behind "
            "it, the policy rule each gets and why, the Defender rows holding it.",
        ),
    ] = None,
    no_color: NoColorOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Read both sides and show what would change in Defender. Writes nothing to Defender."""

    def body() -> int:
        from reconciler.wiring import open_engine

        settings = _load(config)
        if explain is not None:
            from reconciler.explain import render_explanation

            with open_engine(settings) as engine:
                sys.stdout.write(render_explanation(engine.explain(explain)))
            sys.stdout.flush()
            return EXIT_OK
        with open_engine(settings) as engine, _progress() as progress:
            the_plan = engine.plan(progress=progress)
        sys.stdout.write(_render(the_plan, output, color=_use_color(no_color)))
        sys.stdout.flush()
        if out is not None:
            out.write_text(json.dumps(the_plan.to_dict(), indent=2, sort_keys=True) + "\n")
            print(f"plan saved to {out}", file=sys.stderr)
        if detailed_exitcode and not the_plan.is_empty:
            return EXIT_CHANGES
        return EXIT_OK

    _exit(_guarded(debug, body))


@app.command()
def apply(
    config: ConfigOpt = None,
    plan_file: Annotated[
        Path | None,
        typer.Option("--plan", help="Apply this saved plan (refused if Defender changed since)."),
    ] = None,
    allow_mass_delete: Annotated[
        bool,
        typer.Option("--allow-mass-delete", help="Apply deletes even when a guard blocks them."),
    ] = False,
    output: Annotated[Output, typer.Option("--output", "-o", help="Report format.")] = Output.text,
    no_color: NoColorOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Plan and apply (or apply a saved plan). Exit 3 when a guard held deletes back."""

    def body() -> int:
        from reconciler.plan import Plan
        from reconciler.wiring import open_engine

        settings = _load(config)
        with open_engine(settings) as engine:
            if plan_file is not None:
                try:
                    data = json.loads(plan_file.read_text())
                    the_plan = Plan.from_dict(data)
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    raise ReconcilerError(f"cannot read saved plan {plan_file}: {exc}") from exc
                engine.check_fresh(the_plan)
            else:
                with _progress() as progress:
                    the_plan = engine.plan(allow_mass_delete=allow_mass_delete, progress=progress)
            if output is not Output.json:
                sys.stdout.write(_render(the_plan, output, color=_use_color(no_color)))
            result = engine.apply(the_plan, allow_mass_delete=allow_mass_delete)
            write_back = engine.write_back_for(the_plan, result)
        if output is Output.json:
            doc = json.loads(_render(the_plan, Output.json, color=False))
            doc["apply"] = {
                "applied": dict(result.applied),
                "failed": [
                    {
                        "action": f.change.kind.value,
                        "indicatorType": f.change.key.type.value if f.change.key else None,
                        "indicatorValue": f.change.key.value if f.change.key else None,
                        "step": f.step,
                        "reason": f.reason,
                    }
                    for f in result.failures
                ],
                "blocked_deletes": result.blocked_deletes,
                "dry_run": result.dry_run,
                "aborted": result.aborted,
            }
            if write_back is not None:
                doc["write_back"] = {
                    "statuses": write_back.checked,
                    "changed": write_back.changed,
                    "edits": write_back.edits,
                    "opencti_calls": write_back.calls,
                    "failed": write_back.failed,
                    "error": write_back.error,
                }
            sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        else:
            sys.stdout.write("\n" + result.summary() + "\n")
            for f in result.failures[:50]:
                sys.stdout.write(f"  ! {f.change.kind.value} {f.change.key}: {f.reason}\n")
            if len(result.failures) > 50:
                sys.stdout.write(f"  ... {len(result.failures) - 50} more failures\n")
            if write_back is not None:
                text = write_back.summary()
                sys.stdout.write(text[:1].upper() + text[1:] + "\n")
        sys.stdout.flush()
        if result.failures or result.aborted:
            return EXIT_ERROR
        if result.blocked_deletes:
            return EXIT_GUARD
        return EXIT_OK

    _exit(_guarded(debug, body))


@app.command()
def check(config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Validate config, reach OpenCTI (token, stream) and Defender (token, list permission)."""

    def body() -> int:
        from reconciler.checks import run_checks

        return run_checks(config, out=sys.stdout)

    _exit(_guarded(debug, body))


@app.command()
def run(config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Run the controller: scheduled full reconciles + live-stream trigger + health/metrics."""

    def body() -> int:
        from reconciler.service import run_service

        return run_service(_load(config))

    _exit(_guarded(debug, body))


@app.command()
def demo(
    count: Annotated[int, typer.Option("--count", help="Indicators to generate.")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Dataset seed.")] = 7,
    no_color: NoColorOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Start both emulators and walk through plan → apply → drift → repair."""

    def body() -> int:
        from reconciler.demo import run_demo

        return run_demo(count=count, seed=seed, color=_use_color(no_color), out=sys.stdout)

    _exit(_guarded(debug, body))


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


@sandbox_app.command(
    "defender",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def sandbox_defender(ctx: typer.Context) -> None:
    """Run the Defender API emulator (options: see --help of the emulator)."""
    from reconciler.sandbox import defender as emulator

    _exit(emulator.main(list(ctx.args)))


@sandbox_app.command(
    "opencti",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def sandbox_opencti(ctx: typer.Context) -> None:
    """Run the fake OpenCTI (GraphQL + live stream) with generated indicators."""
    from reconciler.sandbox import opencti as emulator

    _exit(emulator.main(list(ctx.args)))


@sandbox_app.command("all")
def sandbox_all(
    count: Annotated[int, typer.Option("--count", help="Indicators to generate.")] = 500,
    seed: Annotated[int, typer.Option("--seed", help="Dataset seed.")] = 7,
    write_config: Annotated[
        Path, typer.Option("--write-config", help="Where to write a config for the sandbox.")
    ] = Path("sandbox.yml"),
    defender_port: Annotated[int, typer.Option(help="Defender emulator port (0 = any).")] = 0,
    opencti_port: Annotated[int, typer.Option(help="Fake OpenCTI port (0 = any).")] = 0,
    debug: DebugOpt = False,
) -> None:
    """Run both emulators with generated indicators and write a config file pointing at them."""

    def body() -> int:
        from reconciler.demo import serve_sandbox

        return serve_sandbox(
            count=count,
            seed=seed,
            config_out=str(write_config),
            defender_port=defender_port,
            opencti_port=opencti_port,
            out=sys.stdout,
        )

    _exit(_guarded(debug, body))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script and ``python -m reconciler``."""
    map_large_allocations()  # process-wide: before the first page is read
    try:
        app(args=argv, prog_name="reconciler", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        if isinstance(code, int):
            return code
        return EXIT_OK if code is None else EXIT_ERROR
    return EXIT_OK
