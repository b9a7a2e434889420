"""A reader of GraphQL documents for the fake OpenCTI: the subset its clients send.

Owns parsing one operation (``query``/``mutation`` keyword and name optional, variable
definitions and directives skipped) into its root selections, each with its alias, arguments
(a variable ``$name`` or a literal: string, number, boolean, null, enum, list, object) and
nested selections, and resolving arguments against the request's variables. Fragments are not
read (``GRAPHQL_VALIDATION_FAILED``); a malformed document answers ``GRAPHQL_PARSE_FAILED``.
Parsed documents are kept by text (clients send the same document with other variables), so
they are immutable.
Must not know what any field does: ``graphql`` dispatches, ``mutations`` resolves.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

from reconciler.sandbox.opencti.core import GraphQLError

_TOKEN = re.compile(
    r"""
    (?P<skip>[\s,\ufeff]+|\#[^\n\r]*)
  | (?P<block>\"\"\"(?:[^"\\]|\\.|"(?!""))*\"\"\")
  | (?P<string>"(?:[^"\\\n\r]|\\.)*")
  | (?P<spread>\.\.\.)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
  | (?P<punct>[!$&():=@\[\]{|}])
    """,
    re.VERBOSE,
)
_OPERATIONS = frozenset({"query", "mutation", "subscription"})


@dataclass(frozen=True)
class Variable:
    """An argument given as ``$name``."""

    name: str


@dataclass(frozen=True)
class Selection:
    """One field of a selection set: ``alias: name(arguments) { selections }``."""

    name: str
    alias: str | None
    arguments: tuple[tuple[str, Any], ...]
    selections: tuple[Selection, ...]

    @property
    def key(self) -> str:
        """The field's name in the answer: its alias, else its name."""
        return self.alias or self.name

    def args(self, variables: dict[str, Any]) -> dict[str, Any]:
        """The arguments with variables replaced by their values (missing ones: None)."""
        return {name: resolve(value, variables) for name, value in self.arguments}


@dataclass(frozen=True)
class Document:
    operation: str  # query, mutation or subscription
    name: str | None
    selections: tuple[Selection, ...]


def resolve(value: Any, variables: dict[str, Any]) -> Any:
    """A literal with the variables it holds replaced by their values."""
    if isinstance(value, Variable):
        return variables.get(value.name)
    if isinstance(value, list):
        return [resolve(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, variables) for k, v in value.items()}
    return value


def operation_of(text: str) -> str:
    """``query``, ``mutation`` or ``subscription``: the keyword the document starts with."""
    pos = 0
    while (match := _TOKEN.match(text, pos)) is not None and match.lastgroup == "skip":
        pos = match.end()
    if match is not None and match.lastgroup == "name" and match.group() in _OPERATIONS:
        return match.group()
    return "query"


@functools.lru_cache(maxsize=128)
def parse(text: str) -> Document:
    """The document's single operation; GraphQLError when it cannot be read."""
    return _Parser(_tokens(text)).document()


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise _syntax(f'Unexpected character "{text[pos]}".', pos)
        kind = match.lastgroup
        assert kind is not None
        if kind != "skip":
            out.append((kind, match.group(), pos))
        pos = match.end()
    return out


def _syntax(message: str, pos: int) -> GraphQLError:
    return GraphQLError(f"Syntax Error: {message} (at offset {pos})", "GRAPHQL_PARSE_FAILED")


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, int]]) -> None:
        self.tokens = tokens
        self.i = 0

    # --- tokens -------------------------------------------------------------------------------

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def at(self, value: str) -> bool:
        token = self.peek()
        return token is not None and token[0] in ("punct", "spread") and token[1] == value

    def take(self) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            end = self.tokens[-1][2] if self.tokens else 0
            raise _syntax("Unexpected <EOF>.", end)
        self.i += 1
        return token

    def expect(self, value: str) -> None:
        kind, text, pos = self.take()
        if kind not in ("punct", "spread") or text != value:
            raise _syntax(f'Expected "{value}", found "{text}".', pos)

    def name(self) -> str:
        kind, text, pos = self.take()
        if kind != "name":
            raise _syntax(f'Expected Name, found "{text}".', pos)
        return text

    # --- grammar ------------------------------------------------------------------------------

    def document(self) -> Document:
        operation, name = "query", None
        token = self.peek()
        if token is not None and token[0] == "name" and token[1] in _OPERATIONS:
            operation = self.name()
            nxt = self.peek()
            if nxt is not None and nxt[0] == "name":
                name = self.name()
            if self.at("("):
                self.skip_balanced("(", ")")
            self.directives()
        selections = self.selection_set()
        rest = self.peek()
        if rest is not None:
            if rest[0] == "name" and rest[1] == "fragment":
                raise GraphQLError(
                    "Fragments are not supported by the fake OpenCTI.", "GRAPHQL_VALIDATION_FAILED"
                )
            raise GraphQLError(
                "This anonymous operation must be the only defined operation.",
                "GRAPHQL_VALIDATION_FAILED",
            )
        return Document(operation, name, selections)

    def skip_balanced(self, opening: str, closing: str) -> None:
        self.expect(opening)
        depth = 1
        while depth:
            _, text, _ = self.take()
            if text == opening:
                depth += 1
            elif text == closing:
                depth -= 1

    def directives(self) -> None:
        while self.at("@"):
            self.take()
            self.name()
            if self.at("("):
                self.skip_balanced("(", ")")

    def selection_set(self) -> tuple[Selection, ...]:
        self.expect("{")
        selections: list[Selection] = []
        while not self.at("}"):
            if self.at("..."):
                _, _, pos = self.take()
                raise GraphQLError(
                    f"Fragments are not supported by the fake OpenCTI (at offset {pos}).",
                    "GRAPHQL_VALIDATION_FAILED",
                )
            selections.append(self.selection())
        self.expect("}")
        if not selections:
            raise _syntax('Expected Name, found "}".', self.tokens[self.i - 1][2])
        return tuple(selections)

    def selection(self) -> Selection:
        first = self.name()
        alias, name = None, first
        if self.at(":"):
            self.take()
            alias, name = first, self.name()
        arguments: dict[str, Any] = {}
        if self.at("("):
            self.take()
            while not self.at(")"):
                arg = self.name()
                self.expect(":")
                arguments[arg] = self.value()
            self.take()
        self.directives()
        selections = self.selection_set() if self.at("{") else ()
        return Selection(name, alias, tuple(arguments.items()), selections)

    def value(self) -> Any:
        kind, text, pos = self.take()
        if kind == "punct" and text == "$":
            return Variable(self.name())
        if kind == "string":
            try:
                return json.loads(text)
            except ValueError as exc:
                raise _syntax("Invalid string.", pos) from exc
        if kind == "block":
            return text[3:-3].replace('\\"""', '"""').strip("\n")
        if kind == "number":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "name":
            return {"true": True, "false": False, "null": None}.get(text, text)
        if kind == "punct" and text == "[":
            items = []
            while not self.at("]"):
                items.append(self.value())
            self.take()
            return items
        if kind == "punct" and text == "{":
            fields: dict[str, Any] = {}
            while not self.at("}"):
                key = self.name()
                self.expect(":")
                fields[key] = self.value()
            self.take()
            return fields
        raise _syntax(f'Unexpected "{text}".', pos)
