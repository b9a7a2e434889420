"""Logging setup: loguru to one sink, text on a terminal or JSON lines, secrets redacted.

Owns: ``configure_logging`` (level, format, sink), the redaction of configured secrets, bearer
tokens and ``client_secret``/``token`` forms in every record (message, extra values, exception
text), ``add_secret`` for secrets learned later (access tokens), and routing stdlib ``logging``
(pycti, msal, httpx) into loguru through the same redaction.
Must not: read configuration files, decide what is secret beyond the patterns below, or print.

Redaction happens twice, cheaply: a loguru patcher cleans message and extra values for every
sink, and our sink's stream wrapper cleans the final text (which also holds the formatted
exception, the one part a patcher cannot reach).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterable
from datetime import UTC
from typing import TYPE_CHECKING, Any, Protocol

from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

__all__ = [
    "InterceptHandler",
    "add_secret",
    "configure_logging",
    "redact",
    "reinstall_intercept",
]

MASK = "********"

#: Secrets shorter than this are not registered: masking every "ab" would garble the logs.
MIN_SECRET_LENGTH = 4

_LEVELS = {
    "debug": "DEBUG",
    "info": "INFO",
    "warn": "WARNING",
    "warning": "WARNING",
    "error": "ERROR",
    "critical": "CRITICAL",
}

_NAMES = r"access_token|refresh_token|id_token|client_secret|client_assertion|password|token"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization headers, wherever they are quoted.
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]+=*"), rf"\g<1>{MASK}"),
    # Form bodies and query strings: client_secret=...&, token=...
    (re.compile(rf"(?i)(?<![A-Za-z0-9])({_NAMES})=[^&\s\"',;}}\\]+"), rf"\g<1>={MASK}"),
    # JSON and Python-repr dicts: "access_token": "...", 'client_secret': '...'
    (
        re.compile(rf"(?i)([\"']({_NAMES})[\"']\s*:\s*[\"'])(?:[^\"'\\]|\\.)*([\"'])"),
        rf"\g<1>{MASK}\g<3>",
    ),
)

_lock = threading.Lock()
_secrets: set[str] = set()
_secret_re: re.Pattern[str] | None = None
_level_no = logging.ERROR


class _Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


def add_secret(secret: str | None) -> None:
    """Register a secret to mask from now on (e.g. an access token when it is acquired).
    Its JSON-escaped form is registered too, so it is masked inside JSON strings."""
    global _secret_re
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        return
    forms = {secret, json.dumps(secret)[1:-1]}
    with _lock:
        if forms <= _secrets:
            return
        _secrets.update(forms)
        # Longest first, so a secret containing another is masked whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_re = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    """``text`` with every registered secret and every token-looking pattern masked."""
    pattern = _secret_re
    if pattern is not None:
        text = pattern.sub(MASK, text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    # Anything else is logged through its text; clean that text.
    return redact(str(value))


def _patch(record: Record) -> None:
    record["message"] = redact(record["message"])
    extra = record["extra"]
    for key, value in extra.items():
        if not key.startswith("_"):
            extra[key] = _redact_value(value)


class _RedactingStream:
    """Wraps the sink's stream; everything loguru writes passes ``redact`` first."""

    def __init__(self, stream: _Writable) -> None:
        self._stream = stream

    def write(self, text: str) -> None:
        self._stream.write(redact(text))

    def flush(self) -> None:
        flush = getattr(self._stream, "flush", None)
        if flush is not None:
            flush()


def _exception_text(record: Record) -> str | None:
    exc = record["exception"]
    if exc is None or exc.type is None:
        return None
    # Plain traceback, never variable values (loguru's "diagnose" would print locals).
    return "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))


def _format_json(record: Record) -> str:
    extra = {k: v for k, v in record["extra"].items() if not k.startswith("_")}
    line: dict[str, Any] = {
        "time": record["time"].astimezone(UTC).isoformat(timespec="milliseconds"),
        "level": record["level"].name,
        "message": record["message"],
        # Records from stdlib logging carry their origin in _logger/_function/_line.
        "logger": record["extra"].get("_logger") or record["name"],
        "function": record["extra"].get("_function") or record["function"],
        "line": record["extra"].get("_line") or record["line"],
    }
    if extra:
        line["extra"] = {k: _redact_value(v) for k, v in extra.items()}
    exc_text = _exception_text(record)
    if exc_text is not None:
        line["exception"] = redact(exc_text)
    record["extra"]["_json"] = json.dumps(line, default=str, ensure_ascii=False)
    return "{extra[_json]}\n"


def _format_text(record: Record) -> str:
    extra = {k: v for k, v in record["extra"].items() if not k.startswith("_")}
    # Extra values are pre-rendered into the record so braces in them are not format fields.
    record["extra"]["_kv"] = "".join(f" {k}={v}" for k, v in extra.items())
    name = "{extra[_logger]}" if record["extra"].get("_logger") else "{name}:{function}:{line}"
    return (
        "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
        f"<cyan>{name}</cyan> - <level>{{message}}</level>{{extra[_kv]}}\n{{exception}}"
    )


def configure_logging(
    level: str,
    fmt: str = "auto",
    *,
    secrets: Iterable[str] = (),
    sink: _Writable | None = None,
    tenant: str | None = None,
) -> None:
    """Send every log record (loguru and stdlib ``logging``) to ``sink`` (default: stderr).

    ``level``: debug, info, warn(ing), error (any case). ``fmt``: ``text``, ``json`` or
    ``auto`` (text when the sink is a terminal, JSON lines otherwise); text is coloured on a
    terminal unless ``NO_COLOR`` is set. ``secrets`` are masked
    in everything written; add more later with ``add_secret``. ``tenant``: carried by every
    record (``tenant=<name>`` in text, ``extra.tenant`` in JSON). Replaces earlier loguru sinks.
    """
    global _level_no
    name = _LEVELS.get(level.strip().lower())
    if name is None:
        raise ValueError(f"unknown log level {level!r}; accepted {', '.join(_LEVELS)}")
    target: _Writable = sys.stderr if sink is None else sink
    isatty = getattr(target, "isatty", None)
    tty = bool(isatty()) if callable(isatty) else False
    mode = fmt.strip().lower()
    if mode not in ("auto", "text", "json"):
        raise ValueError(f"unknown log format {fmt!r}; accepted auto, text, json")
    as_json = mode == "json" or (mode == "auto" and not tty)
    for secret in secrets:
        add_secret(secret)

    logger.remove()
    logger.configure(patcher=_patch, extra={"tenant": tenant} if tenant else {})
    logger.add(
        _RedactingStream(target),
        level=name,
        format=_format_json if as_json else _format_text,
        colorize=tty and not as_json and not os.environ.get("NO_COLOR"),
        backtrace=False,
        diagnose=False,  # diagnose prints local variables, which may hold secrets
        catch=True,
    )
    _level_no = logging.getLevelNamesMapping()[name]
    reinstall_intercept()
    # Libraries' INFO chatter (one line per HTTP request, pycti's "Listing Indicators") drowns
    # our own lines; they speak up again at debug level.
    quiet = logging.DEBUG if _level_no <= logging.DEBUG else logging.WARNING
    for noisy in _NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(quiet)


#: Third-party loggers kept at WARNING unless the configured level is DEBUG.
_NOISY_LOGGERS = (
    "httpx",
    "httpcore",
    "api",
    "pycti",
    "msal",
    "urllib3",
    "apscheduler",
    "kubernetes_asyncio",
)


class InterceptHandler(logging.Handler):
    """A stdlib ``logging`` handler that re-emits each record through loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format in a library's call must not lose the line
            message = f"{record.msg!r} {record.args!r}"
        bound = logger.bind(_logger=record.name, _function=record.funcName, _line=record.lineno)
        bound.opt(exception=record.exc_info).log(level, message)


def reinstall_intercept() -> None:
    """Put our ``InterceptHandler`` back as the root logger's only handler.

    Call after constructing pycti clients: ``OpenCTIApiClient`` runs
    ``logging.basicConfig(force=True)``, which replaces the root handlers process-wide."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(InterceptHandler())
    root.setLevel(_level_no)
