"""Reading the configuration: ``load_settings`` finds the YAML file, reads it and the env vars,
applies precedence (CLI overrides > env var > YAML file > default; empty = unset), validates
through ``Settings``, and words the one ``ConfigError`` that names every bad key with its env var
and the source its value came from (unknown sections and keys get a "did you mean").

Must not: declare keys, defaults or descriptions (the ``sections`` module owns them), log, open
network connections, or put a secret's value in a message (secrets are never quoted, and the
final text masks any that leaked through another key's value).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError

from reconciler.config.sections import (
    _PYCTI_KEYS,
    _SECTIONS,
    ENV_VARS,
    MASK,
    REQUIRED_KEYS,
    SECRET_KEYS,
    Settings,
    _extra,
)
from reconciler.config.values import _show
from reconciler.errors import ConfigError

#: Read when ``load_settings`` gets no path and the file exists in the working directory.
DEFAULT_CONFIG_FILE = "config.yml"


def load_settings(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    require: bool = True,
) -> Settings:
    """Read the YAML file (``path``, else ``./config.yml`` when present), apply env vars
    (``env``, else ``os.environ``) and ``overrides`` (dotted keys; ``None`` values are
    skipped), validate, and return the settings.

    Raises ``ConfigError`` naming every problem at once. With ``require=False`` the required
    keys may stay unset (``None``), for commands that need only part of the configuration."""
    env = os.environ if env is None else env
    problems: list[tuple[int, str]] = []
    file_label = ""
    document: dict[str, Any] = {}
    file_path = _resolve_path(path)
    if file_path is not None:
        file_label = f"file {file_path.name}"
        document = _read_yaml(file_path)
        problems += _unknown_keys(document, file_label)

    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for dotted, env_name in ENV_VARS.items():
        section, key = dotted.split(".", 1)
        raw_section = document.get(section)
        file_value = raw_section.get(key) if isinstance(raw_section, dict) else None
        if not _unset(file_value):
            values[dotted], origin[dotted] = file_value, file_label
        env_value = env.get(env_name)
        if env_value is not None and env_value.strip():
            values[dotted], origin[dotted] = env_value.strip(), "env"
    for dotted, value in (overrides or {}).items():
        if dotted not in ENV_VARS:
            problems.append((len(ENV_VARS), f"  {dotted} (override): unknown key"))
        elif value is not None:
            values[dotted], origin[dotted] = value, "override"

    nested: dict[str, dict[str, Any]] = {section: {} for section in _SECTIONS}
    for dotted, value in values.items():
        section, key = dotted.split(".", 1)
        nested[section][key] = value

    settings: Settings | None = None
    try:
        settings = Settings.model_validate(nested)
    except ValidationError as exc:
        problems += _describe(exc, values, origin)
    if require:
        order = list(ENV_VARS)
        for dotted in REQUIRED_KEYS:
            if dotted not in values:
                line = f"  {dotted} ({ENV_VARS[dotted]}): required, not set"
                problems.append((order.index(dotted), line))
    if problems or settings is None:
        raise ConfigError(_summary(problems, values))
    return settings


def _unset(value: Any) -> bool:
    """A YAML key left empty (``key:``) or ``""`` means "use the default", like an empty env."""
    return value is None or (isinstance(value, str) and not value.strip())


def _resolve_path(path: str | Path | None) -> Path | None:
    if path is None:
        default = Path(DEFAULT_CONFIG_FILE)
        return default if default.is_file() else None
    return Path(path)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read config file {path}: not UTF-8 text") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # str(exc) quotes the offending line, which may hold a secret: use the position only.
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"cannot parse config file {path}: {where}: {problem}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(
            f"config file {path} must be a mapping of sections "
            f"({', '.join(_SECTIONS)}), not {type(document).__name__}"
        )
    return document


def _unknown_keys(document: dict[str, Any], label: str) -> list[tuple[int, str]]:
    """Every key of the file that is not a setting (nor a pycti key we knowingly ignore)."""
    last = len(ENV_VARS)
    problems: list[tuple[int, str]] = []
    for section, body in document.items():
        name = str(section)
        if name not in _SECTIONS:
            hint = _did_you_mean(name, list(_SECTIONS))
            problems.append((last, f"  {name} (from {label}): unknown section{hint}"))
            continue
        if body is None:
            continue
        if not isinstance(body, dict):
            problems.append((last, f"  {name} (from {label}): must be a mapping of keys"))
            continue
        known = _SECTIONS[name].model_fields
        for key in body:
            if str(key) in known or str(key) in _PYCTI_KEYS.get(name, ()):
                continue
            hint = _did_you_mean(str(key), list(known))
            problems.append((last, f"  {name}.{key} (from {label}): unknown key{hint}"))
    return problems


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _describe(
    exc: ValidationError, values: dict[str, Any], origin: dict[str, str]
) -> list[tuple[int, str]]:
    """One line per bad key: key, env var, source, and what was wrong / what is accepted."""
    order = list(ENV_VARS)
    lines: dict[str, tuple[int, str]] = {}
    for error in exc.errors():
        loc = error["loc"]
        dotted = ".".join(str(part) for part in loc[:2])
        if dotted in lines or dotted not in ENV_VARS:
            continue
        extra = _extra(*dotted.split(".", 1))
        if extra["secret"]:
            reason = f"the value is not {extra['accepted']}"  # never echo a secret
        elif error["type"] == "value_error":
            reason = str(error["ctx"]["error"])
        else:
            reason = f"{_show(values.get(dotted, error['input']))} is not {extra['accepted']}"
        source = origin.get(dotted, "default")
        line = f"  {dotted} ({ENV_VARS[dotted]}, from {source}): {reason}"
        lines[dotted] = (order.index(dotted), line)
    return list(lines.values())


def _summary(problems: list[tuple[int, str]], values: dict[str, Any]) -> str:
    count = len(problems)
    text = f"invalid configuration ({count} problem{'s' if count != 1 else ''}):\n"
    text += "\n".join(line for _, line in sorted(problems))
    # Belt and braces: no secret may leak through a quoted value of another key.
    for dotted in SECRET_KEYS:
        secret = values.get(dotted)
        if isinstance(secret, SecretStr):
            secret = secret.get_secret_value()
        if isinstance(secret, str) and secret.strip():
            text = text.replace(secret.strip(), MASK)
    return text
