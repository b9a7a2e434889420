"""Logging: nothing secret reaches the sink (messages, extras, exceptions, stdlib records),
JSON lines are valid JSON, the level filters, and the stdlib intercept survives pycti."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
from loguru import logger

from reconciler import logs
from reconciler.logs import add_secret, configure_logging, redact, reinstall_intercept

TOKEN = "opencti-token-0123456789"
CLIENT_SECRET = 'cl"ient\\secret~Zq8'  # quote and backslash: JSON escapes them
ACCESS_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOi.eyJhdWQiOiJodHRwczovL2FwaS.c2lnbmF0dXJl"
FORM_SECRET = "formSecretValue42"
LEAKS = (
    TOKEN,
    CLIENT_SECRET,
    json.dumps(CLIENT_SECRET)[1:-1],
    ACCESS_TOKEN,
    FORM_SECRET,
    "localpassword99",
)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fresh secret registry per test; loguru and the root logger put back afterwards."""
    monkeypatch.setattr(logs, "_secrets", set())
    monkeypatch.setattr(logs, "_secret_re", None)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    logger.remove()
    logger.configure(patcher=None)  # type: ignore[arg-type]
    logger.add(sys.stderr)
    root.handlers[:] = handlers
    root.setLevel(level)


def emit_everything() -> None:
    """Log the secrets every way the service could."""
    logger.info("opencti token is {}", TOKEN)
    logger.bind(secret=CLIENT_SECRET, nested={"auth": f"Bearer {ACCESS_TOKEN}"}).warning(
        "token request body", body=f"grant_type=client_credentials&client_secret={FORM_SECRET}"
    )
    logger.info("response {}", json.dumps({"access_token": ACCESS_TOKEN, "expires_in": 3599}))
    logger.info("headers {}", {"Authorization": f"Bearer {ACCESS_TOKEN}"})
    password = "localpassword99"  # a local: loguru's diagnose would print it
    try:
        # diagnose would print the value of `password` under this line
        raise RuntimeError(f"login failed for secret {CLIENT_SECRET}", len(password))
    except RuntimeError:
        logger.exception("Defender call failed")
    stdlib = logging.getLogger("msal.token")
    stdlib.warning("POST /token body=%s", f"client_secret={FORM_SECRET}&scope=x")
    stdlib.error("Authorization: bearer %s", ACCESS_TOKEN)
    try:
        raise ValueError(f"pycti: token={TOKEN}")
    except ValueError:
        logging.getLogger("pycti").exception("stream failed")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_no_secret_reaches_the_sink(fmt: str) -> None:
    sink = io.StringIO()
    configure_logging("debug", fmt, secrets=[TOKEN, CLIENT_SECRET], sink=sink)
    emit_everything()
    out = sink.getvalue()
    for leak in LEAKS:
        assert leak not in out, leak
    # The lines themselves are there, with the secrets masked.
    assert "opencti token is ********" in out
    assert "Defender call failed" in out and "RuntimeError" in out
    assert "client_secret=********" in out
    assert "Bearer ********" in out
    assert "stream failed" in out and "ValueError" in out
    assert out.count("\n") >= 7


def test_secret_added_later_is_masked() -> None:
    sink = io.StringIO()
    configure_logging("info", "json", sink=sink)
    logger.info("before {}", "late-access-token-xyz")
    add_secret("late-access-token-xyz")
    logger.info("after {}", "late-access-token-xyz")
    first, second = sink.getvalue().splitlines()
    assert "late-access-token-xyz" in first  # not known yet
    assert "late-access-token-xyz" not in second


def test_patcher_protects_other_sinks() -> None:
    configure_logging("info", "json", secrets=[TOKEN], sink=io.StringIO())
    seen: list[str] = []
    logger.add(lambda m: seen.append(m.record["message"] + repr(m.record["extra"])))
    logger.bind(t=TOKEN).info("x {}", TOKEN)
    assert seen and TOKEN not in seen[0]


def test_json_lines_are_valid_json() -> None:
    sink = io.StringIO()
    configure_logging("debug", "json", secrets=[TOKEN], sink=sink)
    emit_everything()
    logger.bind(count=3, ratio=0.5, flag=True, items=["a", TOKEN]).info("with {braces}")
    rows = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert len(rows) == 9
    assert {"time", "level", "message", "logger", "function", "line"} <= set(rows[0])
    last = rows[-1]
    assert last["message"] == "with {braces}"
    assert last["extra"] == {"count": 3, "ratio": 0.5, "flag": True, "items": ["a", "********"]}
    failed = next(r for r in rows if r["message"] == "Defender call failed")
    assert failed["level"] == "ERROR" and "RuntimeError" in failed["exception"]
    stdlib = next(r for r in rows if r["logger"] == "msal.token")
    assert stdlib["function"] == "emit_everything"


def test_auto_format_follows_the_tty() -> None:
    pipe, tty = io.StringIO(), Tty()
    configure_logging("info", "auto", sink=pipe)
    logger.info("hello")
    configure_logging("info", "auto", sink=tty)
    logger.info("hello")
    assert json.loads(pipe.getvalue())["message"] == "hello"
    text = tty.getvalue()
    assert "INFO" in text and "hello" in text and "\x1b[" in text  # coloured text
    assert not text.startswith("{")


def test_no_color_env_turns_colour_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    tty = Tty()
    configure_logging("info", "auto", sink=tty)
    logger.info("hello")
    assert "\x1b[" not in tty.getvalue() and "| INFO     |" in tty.getvalue()


def test_forced_text_on_a_pipe_has_no_colour() -> None:
    sink = io.StringIO()
    configure_logging("info", "text", sink=sink)
    logger.bind(run="r1").info("plain")
    out = sink.getvalue()
    assert "\x1b[" not in out and "| INFO     |" in out and "plain run=r1" in out


@pytest.mark.parametrize(
    ("level", "shown", "hidden"),
    [
        ("warn", "WARNING", "INFO"),
        ("WARNING", "WARNING", "INFO"),
        ("error", "ERROR", "WARNING"),
        ("info", "INFO", "DEBUG"),
    ],
)
def test_level_filters_loguru_and_stdlib(level: str, shown: str, hidden: str) -> None:
    sink = io.StringIO()
    configure_logging(level, "json", sink=sink)
    for name in (shown, hidden):
        logger.log(name, f"loguru {name}")
        logging.getLogger("a.library").log(logging.getLevelNamesMapping()[name], f"stdlib {name}")
    messages = [json.loads(line)["message"] for line in sink.getvalue().splitlines()]
    assert messages == [f"loguru {shown}", f"stdlib {shown}"]


def test_bad_level_and_format_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("verbose", sink=io.StringIO())
    with pytest.raises(ValueError, match="unknown log format"):
        configure_logging("info", "xml", sink=io.StringIO())


def test_reinstall_intercept_after_pycti_basic_config() -> None:
    sink, stolen = io.StringIO(), io.StringIO()
    configure_logging("info", "json", secrets=[TOKEN], sink=sink)
    # What OpenCTIApiClient does on construction.
    logging.basicConfig(level=logging.INFO, force=True, stream=stolen)
    logging.getLogger("a.library").info("lost %s", TOKEN)
    assert sink.getvalue() == ""
    reinstall_intercept()
    logging.getLogger("a.library").info("found %s", TOKEN)
    rows = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert [r["message"] for r in rows] == ["found ********"]
    assert len(logging.getLogger().handlers) == 1


def test_stdlib_bad_format_args_do_not_lose_the_line() -> None:
    sink = io.StringIO()
    configure_logging("info", "json", sink=sink)
    logging.getLogger("lib").warning("%s %s", "only-one")
    assert "only-one" in json.loads(sink.getvalue())["message"]


REDACTIONS = [
    ("Authorization: Bearer abc.def-ghi_jkl==", "Authorization: Bearer ********"),
    ("authorization: BEARER xyz", "authorization: BEARER ********"),
    ("client_secret=s3cr3t&scope=x", "client_secret=********&scope=x"),
    ("https://h/p?token=abc123&x=1", "https://h/p?token=********&x=1"),
    ("access_token=abc refresh_token=def", "access_token=******** refresh_token=********"),
    ('{"access_token": "abc", "n": 1}', '{"access_token": "********", "n": 1}'),
    ('{"client_secret":"a\\"b"}', '{"client_secret":"********"}'),
    ("{'token': 'abc'}", "{'token': '********'}"),
    ("tokens=5 token_type=Bearer", "tokens=5 token_type=Bearer"),  # nothing secret here
    ("mytoken=abc", "mytoken=abc"),
]


@pytest.mark.parametrize(("text", "expected"), REDACTIONS, ids=[r[0] for r in REDACTIONS])
def test_redact_patterns(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_short_secrets_are_not_registered() -> None:
    add_secret("ab")
    add_secret("")
    add_secret(None)
    assert redact("abc ab") == "abc ab"


def test_longest_secret_wins() -> None:
    add_secret("abcd")
    add_secret("abcdefgh")
    assert redact("x abcdefgh y") == "x ******** y"


def test_library_chatter_is_quiet_at_info_and_shown_at_debug() -> None:
    sink = io.StringIO()
    configure_logging("info", "json", sink=sink)
    logging.getLogger("httpx").info("HTTP Request: GET /api/indicators")
    logging.getLogger("httpx").warning("a real problem")
    messages = [json.loads(line)["message"] for line in sink.getvalue().splitlines()]
    assert messages == ["a real problem"]
    sink = io.StringIO()
    configure_logging("debug", "json", sink=sink)
    logging.getLogger("httpx").info("HTTP Request: GET /api/indicators")
    assert "HTTP Request" in sink.getvalue()
