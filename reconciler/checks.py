"""``reconciler check``: preflight of config, OpenCTI and Defender, one line per check.

Each check prints ``[ ok ]`` or ``[fail]`` with a hint; the exit code is 0 only when all pass.
Read-only: lists at most one Defender indicator and never writes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from reconciler.errors import ReconcilerError

if TYPE_CHECKING:
    from reconciler.config import Settings

__all__ = ["run_checks"]


def _line(out: IO[str], ok: bool, what: str, detail: str = "", hint: str = "") -> None:
    mark = "[ ok ]" if ok else "[fail]"
    text = f"{mark} {what}"
    if detail:
        text += f": {detail}"
    out.write(text + "\n")
    if hint and not ok:
        out.write(f"       hint: {hint}\n")
    out.flush()


def _attempt(fn: Callable[[], str]) -> tuple[bool, str]:
    try:
        return True, fn()
    except ReconcilerError as exc:
        return False, str(exc)
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


def run_checks(config: Path | None, *, out: IO[str]) -> int:
    """Run every check; returns 0 when all passed, 1 otherwise."""
    from reconciler.config import load_settings
    from reconciler.logs import configure_logging

    try:
        settings = load_settings(config)
    except ReconcilerError as exc:
        _line(out, False, "configuration", str(exc), "see config.example.yml and the README")
        return 1
    configure_logging("error", settings.reconciler.log_format, secrets=settings.secrets())
    _line(out, True, "configuration", "all keys valid")
    results = [
        _check_opencti(settings, out),
        _check_defender(settings, out),
    ]
    return 0 if all(results) else 1


def _check_opencti(settings: Settings, out: IO[str]) -> bool:
    from reconciler.wiring import opencti_source

    source = opencti_source(settings)

    def stream() -> str:
        filters = source.stream_filters()
        n = len(filters.get("filters", [])) + len(filters.get("filterGroups", [])) if filters else 0
        return f"stream {settings.connector.live_stream_id} found ({n} filter clauses)"

    ok, detail = _attempt(stream)
    _line(
        out,
        ok,
        f"OpenCTI at {settings.opencti.url}",
        detail,
        "check opencti.url, opencti.token and connector.live_stream_id "
        "(Data sharing → Live streams in OpenCTI)",
    )
    return ok


def _check_defender(settings: Settings, out: IO[str]) -> bool:
    from reconciler.wiring import defender_client

    mdi = settings.microsoft_defender_intel
    client = defender_client(settings)
    try:

        def token() -> str:
            client.probe_token()
            return f"token for {mdi.scope} acquired from {mdi.login_url}"

        ok_token, detail = _attempt(token)
        _line(
            out,
            ok_token,
            "Defender token",
            detail,
            "check tenant_id, client_id, client_secret (the secret VALUE, not its id) and "
            "login_url; for sovereign clouds also scope",
        )
        if not ok_token:
            return False

        def listing() -> str:
            n = client.probe_list()
            return f"GET {mdi.base_url}{mdi.resource_path} allowed ({n} row read)"

        ok_list, detail = _attempt(listing)
        hint = "grant the application permission Ti.ReadWrite.All and admin consent"
        _line(out, ok_list, "Defender list permission", detail, hint)
        return ok_list
    finally:
        client.close()
