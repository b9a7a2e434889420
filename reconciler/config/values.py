"""Env-string and YAML value parsing for the settings: the parsers and validators run around
pydantic's own type checks (booleans, comma lists, URLs, paths, actions, ignorable fields), the
annotated types built from them (``Flag``, ``Names``, ``Url``, ``NonEmpty``, ``LogLevel``,
``LogFormat``) and ``_setting``, the one way a section declares a key (env var, what it accepts,
and the description the README table and the Helm chart are generated from).

Must not: know the sections or their keys, read a file or the environment, log, or quote a
secret (``_show`` is only ever given values that are not secrets).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field

from reconciler.errors import excerpt
from reconciler.model import IGNORABLE_FIELDS, Action

_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
_BOOL_WORDS = "true/false/yes/no/1/0"
_LOG_LEVELS = ("debug", "info", "warn", "warning", "error")


# -- value parsers (run before pydantic's own type checks) --------------------------------------


def _parse_bool(value: Any) -> Any:
    """Accept real booleans, 0/1 and the words true/false/yes/no (any case); refuse the rest,
    so a typo like ``ture`` is an error instead of pydantic's looser reading."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError(f"{_show(value)} is not a boolean ({_BOOL_WORDS})")


def _split_list(value: Any) -> Any:
    """A comma-separated string (env var or YAML) or a YAML list → tuple of non-blank strings."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return value  # let pydantic name the type problem
    return tuple(str(item).strip() for item in items if str(item).strip())


def _check_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{_show(value)} is not an http(s) URL")
    return value.strip().rstrip("/")


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{_show(value)} is not a path starting with '/'")
    return value


def _check_file(value: Path) -> Path:
    if not value.is_file():
        raise ValueError(f"{_show(str(value))} is not an existing file")
    return value


def _check_non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("an empty string is not allowed")
    return value.strip()


def _parse_action(value: Any) -> Any:
    """Match an action name case-insensitively (``block`` → ``Block``)."""
    if isinstance(value, str):
        for action in Action:
            if action.value.lower() == value.strip().lower():
                return action
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _check_ignorable(value: tuple[str, ...]) -> tuple[str, ...]:
    bad = [item for item in value if item not in IGNORABLE_FIELDS]
    if bad:
        shown = ", ".join(_show(b) for b in bad)
        verb = "is" if len(bad) == 1 else "are"
        raise ValueError(f"{shown} {verb} not one of {', '.join(IGNORABLE_FIELDS)}")
    return value


def _parse_json_object(value: Any) -> Any:
    """A JSON object given as text (env var, or a YAML string) or as a YAML mapping."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object (a FilterGroup: mode, filters, filterGroups)")
    return value or None  # {} is "not set" (a Helm default), never "no filter at all"


def _show(value: Any) -> str:
    """A value as quoted in an error: repr, cut short (never used for secrets)."""
    return excerpt(repr(value), 80)


Flag = Annotated[bool, BeforeValidator(_parse_bool)]
Names = Annotated[tuple[str, ...], BeforeValidator(_split_list)]
JsonObject = Annotated[dict[str, Any], BeforeValidator(_parse_json_object)]
Url = Annotated[str, AfterValidator(_check_url)]
NonEmpty = Annotated[str, AfterValidator(_check_non_empty)]
LogLevel = Annotated[Literal["debug", "info", "warn", "warning", "error"], BeforeValidator(_lower)]
LogFormat = Annotated[Literal["auto", "text", "json"], BeforeValidator(_lower)]


def _setting(
    default: Any,
    meaning: str,
    *,
    env: str,
    accepted: str,
    required: bool = False,
    secret: bool = False,
    **constraints: Any,
) -> Any:
    """A field with its env var, what it accepts (quoted in errors), and a description that
    says meaning, default and env var (read by the README and Helm chart generators)."""
    if required:
        shown = "required"
    elif default is None:
        shown = "default: not set"
    elif isinstance(default, tuple):
        shown = f"default: {', '.join(default) or 'empty list'}"
    else:
        shown = f"default: {default}"
    return Field(
        default=default,
        description=f"{meaning} Accepts {accepted}; {shown}; env {env}.",
        json_schema_extra={
            "env": env,
            "accepted": accepted,
            "required": required,
            "secret": secret,
        },
        **constraints,
    )
