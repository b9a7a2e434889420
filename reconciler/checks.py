"""``reconciler check``: preflight of config, OpenCTI and Defender, one line per check.

Each check prints ``[ ok ]`` or ``[fail]`` with a hint; the exit code is 0 only when all pass.
``[note]`` lines inform without failing (an API that announced its end of life, a token whose
permissions cannot be read). Read-only: lists at most one Defender indicator and never writes;
the write permission is read from the access token's ``roles`` claim, before any write.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from reconciler.errors import ReconcilerError

if TYPE_CHECKING:
    from reconciler.config import Settings
    from reconciler.opencti.source import OpenCTISource

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
    from reconciler.wiring import mapping_policy

    try:
        settings = load_settings(config)
        mapping_policy(settings)  # the policy's rules and exclusions, as the run would build them
    except ReconcilerError as exc:
        _line(out, False, "configuration", str(exc), "see config.example.yml and the README")
        return 1
    configure_logging("error", settings.reconciler.log_format, secrets=settings.secrets())
    _line(out, True, "configuration", "all keys valid")
    results = [
        _check_opencti(settings, out),
        _check_defender(settings, out),
    ]
    if settings.reconciler.sightings and not settings.reconciler.dry_run:
        results.append(_check_graph(settings, out))
    return 0 if all(results) else 1


def _check_opencti(settings: Settings, out: IO[str]) -> bool:
    from reconciler.wiring import opencti_source

    source = opencti_source(settings)

    def stream() -> str:
        filters = source.stream_filters()
        n = len(filters.get("filters", [])) + len(filters.get("filterGroups", [])) if filters else 0
        source.listing_filters()  # the filters must be usable for the listing (fail closed)
        return f"stream {settings.connector.live_stream_id} found ({n} filter clauses, usable)"

    ok, detail = _attempt(stream)
    _line(
        out,
        ok,
        f"OpenCTI at {settings.opencti.url}",
        detail,
        "check opencti.url, opencti.token and connector.live_stream_id "
        "(Data sharing → Live streams in OpenCTI); an unusable filter key is named above",
    )
    if not ok:
        return False
    return _check_stream_access(settings, out) & _check_position_store(settings, source, out)


def _check_stream_access(settings: Settings, out: IO[str]) -> bool:
    from reconciler.opencti.probes import STREAM_CAPABILITY, probe_stream

    octi = settings.opencti
    assert octi.url is not None and octi.token is not None  # opencti_source checked them

    def opened() -> str:
        probe_stream(
            octi.url or "",
            octi.token.get_secret_value() if octi.token else "",
            str(settings.connector.live_stream_id),
            ssl_verify=octi.ssl_verify,
        )
        return "the token may read it"

    ok, detail = _attempt(opened)
    hint = (
        f"give the OpenCTI user the capability 'Access data sharing' ({STREAM_CAPABILITY}), "
        "which a non-public live stream requires (or make the stream public)"
    )
    _line(out, ok, "OpenCTI live stream access", detail, hint)
    return ok


def _check_position_store(settings: Settings, source: OpenCTISource, out: IO[str]) -> bool:
    """Where the stream position is kept: ``state_path`` must be writable; OpenCTI's connector
    state needs the capability to register a connector."""
    from reconciler.opencti.probes import (
        CONNECTOR_CAPABILITY,
        can_store_position,
        describe,
        user_capabilities,
    )

    what = "Stream position storage"
    path = settings.reconciler.state_path
    if path is not None:
        ok, detail = _attempt(lambda: _writable(path))
        hint = "reconciler.state_path must be a file in a writable directory"
        _line(out, ok, what, detail, hint)
        return ok
    caps = user_capabilities(source)
    if caps is None:
        _note(out, what, "the OpenCTI user's capabilities could not be read; not checked")
        return True
    if can_store_position(caps):
        _line(out, True, what, "in OpenCTI's connector state (the user may register it)")
        return True
    hint = (
        f"give the OpenCTI user the capability 'Connectors API usage' ({CONNECTOR_CAPABILITY}) "
        "to keep the position in OpenCTI, or set reconciler.state_path (RECONCILER_STATE_PATH)"
    )
    _line(out, False, what, f"the user's capabilities are {describe(caps)}", hint)
    return False


def _writable(path: Path) -> str:
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".check-"):
        pass
    return f"{path} can be written"


#: The application permission the import and BatchDelete pages require.
WRITE_ROLE = "Ti.ReadWrite.All"


def _check_defender(settings: Settings, out: IO[str]) -> bool:
    from reconciler.wiring import defender_client

    mdi = settings.microsoft_defender_intel
    client = defender_client(settings)
    roles: list[tuple[str, ...] | None] = []
    try:

        def token() -> str:
            roles.append(client.probe_token())
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
        ok_write = _check_write_role(roles[0] if roles else None, out)

        def listing() -> str:
            n = client.probe_list()
            return f"GET {mdi.base_url}{mdi.resource_path} allowed ({n} row read)"

        ok_list, detail = _attempt(listing)
        hint = f"grant the application permission {WRITE_ROLE} and admin consent"
        _line(out, ok_list, "Defender list permission", detail, hint)
        for notice in client.lifecycle.notices:
            _note(out, "Defender API lifecycle", notice.describe(), _LIFECYCLE_HINT)
        return ok_write and ok_list
    finally:
        client.close()


_LIFECYCLE_HINT = (
    "Microsoft retires the Defender for Endpoint APIs (MC1220762); see the README section "
    "'API lifecycle' for what to do"
)


def _check_write_role(roles: tuple[str, ...] | None, out: IO[str]) -> bool:
    """Before any write: the token must carry Ti.ReadWrite.All (read from its roles claim)."""
    what = "Defender write permission"
    if roles is None:
        _note(out, what, "the token's roles could not be read; not checked")
        return True
    if WRITE_ROLE in roles:
        _line(out, True, what, f"the token carries {WRITE_ROLE}")
        return True
    shown = ", ".join(roles) or "no application permission"
    hint = (
        f"grant the application permission {WRITE_ROLE} (WindowsDefenderATP API) and admin "
        "consent: the import and BatchDelete endpoints require it; Ti.ReadWrite alone only "
        "sees the indicators the app created itself, so another application's indicator on "
        "a desired value would go unnoticed"
    )
    _line(out, False, what, f"the token carries {shown}, not {WRITE_ROLE}", hint)
    return False


def _check_graph(settings: Settings, out: IO[str]) -> bool:
    """Sightings read alerts from Microsoft Graph: one listing of the last minute."""
    from datetime import UTC, datetime, timedelta

    from reconciler.wiring import graph_alerts

    mdi = settings.microsoft_defender_intel
    alerts = graph_alerts(settings)
    try:

        def listing() -> str:
            now = datetime.now(UTC)
            n = sum(1 for _ in alerts.alerts(now - timedelta(minutes=1), now))
            return f"GET {mdi.graph_url}/v1.0/security/alerts_v2 allowed ({n} alerts last minute)"

        ok, detail = _attempt(listing)
        hint = (
            "grant the Microsoft Graph application permission SecurityAlert.Read.All with "
            "admin consent, or set reconciler.sightings: false"
        )
        _line(out, ok, "Graph alerts permission (sightings)", detail, hint)
        return ok
    finally:
        alerts.close()


def _note(out: IO[str], what: str, detail: str, hint: str = "") -> None:
    out.write(f"[note] {what}: {detail}\n")
    if hint:
        out.write(f"       hint: {hint}\n")
    out.flush()
