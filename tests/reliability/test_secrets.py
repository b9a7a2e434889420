"""Secrets: with an OpenCTI token and a client secret set (distinct random strings), nothing
the reconciler shows contains them, nor any access token Defender issued.

Covered: every CLI command's stdout/stderr with logs at debug level in text and JSON (the
product's own log pipeline, written to the captured stderr), plan reports in every format and a
saved plan file, failing runs (wrong client secret, wrong OpenCTI token; with ``--debug``
tracebacks), the exceptions themselves (str, repr, chained tracebacks), ``repr`` of the
settings, and the controller's logs, ``/metrics``, ``/readyz`` and ``/healthz``.
"""

from __future__ import annotations

import io
import secrets
import threading
import traceback
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.cli import main
from reconciler.clock import FakeClock
from reconciler.controller import Controller
from reconciler.defender.auth import TokenProvider
from reconciler.errors import ReconcilerError
from reconciler.logs import add_secret, configure_logging
from reconciler.metrics import Metrics
from reconciler.opencti.source import OpenCTISource
from reconciler.opencti.state import MemoryStore
from reconciler.opencti.stream import StreamConsumer, StreamEvent, StreamTuning
from reconciler.sandbox.dataset import generate_indicators
from reconciler.sandbox.defender import DefenderEmulator
from reconciler.sandbox.opencti import OpenCTIEmulator
from reconciler.wiring import controller_options, open_engine
from tests.e2e.support import write_config
from tests.reliability.support import TODAY, settings_for

OPENCTI_TOKEN = "octi-" + secrets.token_hex(16)
CLIENT_SECRET = "cs~" + secrets.token_urlsafe(24)
WRONG_SECRET = "wrong~" + secrets.token_urlsafe(24)
WRONG_TOKEN = "octi-wrong-" + secrets.token_hex(16)


@dataclass
class Env:
    defender: DefenderEmulator
    opencti: OpenCTIEmulator
    tmp: Path

    def issued_tokens(self) -> list[str]:
        """Every access token the emulator issued (its own bookkeeping)."""
        return list(self.defender._tokens)

    def all_secrets(self) -> list[str]:
        return [OPENCTI_TOKEN, CLIENT_SECRET, WRONG_SECRET, WRONG_TOKEN, *self.issued_tokens()]

    def assert_clean(self, text: str, what: str) -> None:
        leaked = [s for s in self.all_secrets() if s in text]
        assert leaked == [], f"{what} shows a secret ({len(leaked)} of them)"
        # Tokens in any common re-encoding too (JSON escapes, URL form).
        assert secrets_in(text, self.all_secrets()) == [], what


def secrets_in(text: str, values: list[str]) -> list[str]:
    from urllib.parse import quote

    found = []
    for value in values:
        for form in (value, quote(value, safe=""), value.encode().hex()):
            if form in text:
                found.append(form)
    return found


@pytest.fixture
def env(tmp_path: Path, plain_logging_after: None) -> Iterator[Env]:
    with (
        DefenderEmulator(client_secret=CLIENT_SECRET, rate_limits=False) as defender,
        OpenCTIEmulator(token=OPENCTI_TOKEN) as opencti,
    ):
        opencti.load(generate_indicators(80, seed=2, now=TODAY))
        yield Env(defender, opencti, tmp_path)


def cli(config: Path, *args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([args[0], "--config", str(config), *args[1:]])
    return code, out.getvalue() + "\n" + err.getvalue()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_cli_output_reports_and_debug_logs_show_no_secret(env: Env, log_format: str) -> None:
    config = write_config(
        env.tmp / "config.yml",
        env.defender,
        env.opencti,
        connector__log_level="debug",
        reconciler__log_format=log_format,
    )
    saved = env.tmp / "plan.json"
    texts: list[tuple[str, str]] = []
    runs = [
        ("check",),
        ("plan",),
        ("plan", "-o", "json"),
        ("plan", "-o", "markdown", "--out", str(saved)),
        ("apply", "--plan", str(saved)),
        ("plan", "--detailed-exitcode"),
        ("apply", "-o", "json"),
        ("apply", "--plan", str(saved)),  # stale now: an error message
    ]
    codes = []
    for args in runs:
        code, text = cli(config, *args)
        codes.append(code)
        texts.append((" ".join(args), text))
    texts.append(("saved plan", saved.read_text()))
    assert codes[:6] == [0, 0, 0, 0, 0, 0] and codes[7] == 1, codes
    assert env.issued_tokens(), "the runs never got a token: nothing was tested"
    everything = "\n".join(t for _, t in texts)
    assert "DEBUG" in everything or '"level": "DEBUG"' in everything, "no debug logs captured"
    assert "access token acquired" in everything
    for what, text in texts:
        env.assert_clean(text, what)


def test_failing_runs_explain_without_the_secret(env: Env) -> None:
    bad_secret = write_config(env.tmp / "bad-secret.yml", env.defender, env.opencti)
    text = bad_secret.read_text().replace(CLIENT_SECRET, WRONG_SECRET)
    bad_secret.write_text(text)
    bad_token = write_config(
        env.tmp / "bad-token.yml", env.defender, env.opencti, connector__log_level="debug"
    )
    bad_token.write_text(bad_token.read_text().replace(OPENCTI_TOKEN, WRONG_TOKEN))
    outputs = []
    for config in (bad_secret, bad_token):
        for args in (("plan",), ("apply", "--debug"), ("check",)):
            code, output = cli(config, *args)
            assert code == 1, (args, output[-500:])
            outputs.append((f"{config.name} {' '.join(args)}", output))
    assert any("invalid_client" in o or "7000215" in o for _, o in outputs[:3]), outputs[0][1]
    for what, output in outputs:
        env.assert_clean(output, what)


def _exception_texts(exc: BaseException) -> str:
    """str, repr and the full traceback with every chained cause."""
    return "\n".join([str(exc), repr(exc), "".join(traceback.format_exception(exc))])


def test_exceptions_carry_no_secret(env: Env) -> None:
    provider = TokenProvider(
        tenant_id=env.defender.tenant_id,
        client_id=env.defender.client_id,
        client_secret=WRONG_SECRET,
        login_url=env.defender.login_url,
        ca_bundle=env.defender.ca_file,
    )
    texts = [repr(provider)]
    with pytest.raises(ReconcilerError) as refused:
        provider.token()
    texts.append(_exception_texts(refused.value))
    provider.close()

    source = OpenCTISource(env.opencti.url, WRONG_TOKEN, env.opencti.stream_id)
    texts.append(repr(source))
    with pytest.raises(ReconcilerError) as unreachable:
        source.list_indicators()
    texts.append(_exception_texts(unreachable.value))

    settings = settings_for(env.defender, env.opencti)
    texts += [repr(settings), str(settings), settings.model_dump_json()]
    for text in texts:
        env.assert_clean(text, "exception or repr")


def test_controller_logs_and_metrics_show_no_secret(env: Env) -> None:
    settings = settings_for(
        env.defender, env.opencti, **{"connector.log_level": "debug", "reconciler.http_port": 0}
    )
    for fmt in ("json", "text"):
        logs = io.StringIO()
        configure_logging("debug", fmt, secrets=settings.secrets(), sink=logs)
        metrics = Metrics()
        clock = FakeClock(datetime.now(UTC))
        with open_engine(
            settings, clock=clock, on_token=add_secret, on_call=metrics.on_defender_call
        ) as engine:
            controller = Controller(controller_options(settings), engine=engine, metrics=metrics)
            assert controller.full_reconcile("startup") is True
            record = env.opencti.indicators()[0]
            data = OpenCTIEmulator.stix_object(record)
            controller.handle_events([StreamEvent("1-0", "update", data, {"data": data})])
            controller.handle_events([StreamEvent("2-0", "create", {"x": OPENCTI_TOKEN}, {})])
            port = controller.start_http(host="127.0.0.1", port=0)
            try:
                pages = [
                    httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).text
                    for path in ("/metrics", "/readyz", "/healthz")
                ]
            finally:
                controller.shutdown()
        text = logs.getvalue()
        assert "access token acquired" in text, "debug logs were not captured"
        env.assert_clean(text, f"controller logs ({fmt})")
        for page in pages:
            env.assert_clean(page, "controller HTTP page")
        env.assert_clean(metrics.render().decode(), "metrics")


def test_stream_consumer_logs_show_no_token(env: Env) -> None:
    logs = io.StringIO()
    configure_logging("debug", "json", secrets=[OPENCTI_TOKEN, WRONG_TOKEN], sink=logs)
    for token in (WRONG_TOKEN, OPENCTI_TOKEN):
        refused, connected = threading.Event(), threading.Event()

        def on_status(
            kind: str,
            info: dict[str, Any],
            refused: threading.Event = refused,
            connected: threading.Event = connected,
        ) -> None:
            if kind == "error" and info.get("kind") == "http":
                refused.set()
            if kind == "connected":
                connected.set()

        consumer = StreamConsumer(
            env.opencti.url,
            token,
            env.opencti.stream_id,
            on_events=lambda events: None,
            state=MemoryStore(),
            on_status=on_status,
            tuning=StreamTuning(backoff_base=0.05, backoff_cap=0.2),
        )
        consumer.start()
        try:
            wanted = refused if token == WRONG_TOKEN else connected
            assert wanted.wait(10), f"stream never reached the expected state with {token[:9]}"
        finally:
            consumer.stop(timeout=5)
    text = logs.getvalue()
    assert "401" in text or "refused" in text.lower(), text[-1000:]
    env.assert_clean(text, "stream consumer logs")
