"""OData ``$filter`` of the Indicators listing: parsing to a predicate, and its evaluation.

Owns the documented filterable fields, a tokenizer and a recursive-descent parser for
``or``/``and``/``not``, comparisons (``eq ne gt ge lt le``) and ``contains``/``startswith``/
``endswith``, plus the query-option errors (``ODataError``). String comparisons are
case-sensitive unless a field is named in ``fold`` (then ``eq``/``ne`` on it ignore case); ``eq``
on a collection (rbacGroupNames/rbacGroupIds) means "has the element". Strict mode refuses
``or`` and a parse tree of more than ``node_limit`` nodes (each operand, comparison, function
call, ``and``, ``or`` and ``not`` is one node; parentheses are none).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from reconciler.sandbox.defender.core import ApiError, RawIndicator, parse_timestamp

FILTER_FIELDS = frozenset(
    {
        "application",
        "createdByDisplayName",
        "expirationTime",
        "generateAlert",
        "title",
        "rbacGroupNames",
        "rbacGroupIds",
        "indicatorValue",
        "indicatorType",
        "creationTimeDateTimeUtc",
        "createdBy",
        "action",
        "severity",
    }
)
MAX_TOP = 10_000
ODATA_MODES = ("lenient", "strict")

FilterFn = Callable[[RawIndicator], Any]

_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^']|'')*')
      | (?P<dt>\d{4}-\d{2}-\d{2}(?:T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?)
      | (?P<num>-?\d+(?:\.\d+)?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>[(),])
    )""",
    re.VERBOSE,
)
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
_FUNCTIONS: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda value, part: part in value,
    "startswith": str.startswith,
    "endswith": str.endswith,
}


def odata_error(message: str) -> ApiError:
    return ApiError(400, "ODataError", message)


def int_param(params: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    """A non-negative integer query option (``$top``, ``$skip``) at least ``minimum``."""
    if name not in params:
        return None
    text = params[name].strip()
    if not text.isdigit() or int(text) < minimum:
        raise odata_error(f"Invalid value '{params[name]}' for query option {name}.")
    return int(text)


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    text = text.strip()
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None or match.lastgroup is None:
            raise odata_error(f"Syntax error at position {pos} in '{text}'.")
        pos = match.end()
        kind, raw = match.lastgroup, match.group(match.lastgroup)
        if kind == "str":
            tokens.append(("lit", raw[1:-1].replace("''", "'")))
        elif kind == "dt":
            moment = parse_timestamp(raw)
            if moment is None:
                raise odata_error(f"Invalid datetime literal '{raw}'.")
            tokens.append(("lit", moment))
        elif kind == "num":
            tokens.append(("lit", float(raw) if "." in raw else int(raw)))
        elif kind == "name" and raw in ("true", "false", "null"):
            tokens.append(("lit", {"true": True, "false": False, "null": None}[raw]))
        else:
            tokens.append((kind, raw))
    return tokens


def _compare(op: str, left: Any, right: Any, fold: bool = False) -> bool:
    if fold and op in ("eq", "ne") and isinstance(left, str) and isinstance(right, str):
        left, right = left.casefold(), right.casefold()
    if isinstance(left, list):
        # A collection compared to a value: membership (see module docstring).
        return (right in left) if op == "eq" else (right not in left) if op == "ne" else False
    if isinstance(left, datetime) and isinstance(right, str):
        right = parse_timestamp(right)
    elif isinstance(right, datetime) and isinstance(left, str):
        left = parse_timestamp(left)
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if left is None or right is None:
        return False
    try:
        return _COMPARISONS[op](left, right)
    except TypeError:
        return False


class _FilterParser:
    """Recursive descent: or > and > not > comparison | function | ( expr )."""

    def __init__(
        self, text: str, fold: frozenset[str], allow_or: bool, node_limit: int | None
    ) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.fold = fold
        self.allow_or = allow_or
        self.node_limit = node_limit
        self.nodes = 0

    def parse(self) -> FilterFn:
        predicate = self._or()
        if self.pos != len(self.tokens):
            raise odata_error(f"Unexpected '{self.tokens[self.pos][1]}' in '{self.text}'.")
        return predicate

    def _count(self) -> None:
        """One more node; refused as soon as the limit is passed (before recursing deeper)."""
        self.nodes += 1
        if self.node_limit is not None and self.nodes > self.node_limit:
            raise odata_error(
                f"The node count limit of '{self.node_limit}' has been exceeded. To increase the "
                "limit, set the 'MaxNodeCount' property on EnableQueryAttribute or "
                "ODataValidationSettings."
            )

    def _peek(self) -> tuple[str, Any]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", None)

    def _take(self) -> tuple[str, Any]:
        token = self._peek()
        if token[0] == "end":
            raise odata_error(f"Unexpected end of $filter '{self.text}'.")
        self.pos += 1
        return token

    def _expect(self, punct: str) -> None:
        if self._take() != ("punct", punct):
            raise odata_error(f"Expected '{punct}' in '{self.text}'.")

    def _or(self) -> FilterFn:
        left = self._and()
        while self._peek() == ("name", "or"):
            if not self.allow_or:
                raise odata_error(
                    f"The 'or' operator is not supported in $filter on this endpoint: "
                    f"'{self.text}'."
                )
            self._take()
            self._count()
            right = self._and()
            left = (lambda a, b: lambda row: a(row) or b(row))(left, right)
        return left

    def _and(self) -> FilterFn:
        left = self._not()
        while self._peek() == ("name", "and"):
            self._take()
            self._count()
            right = self._not()
            left = (lambda a, b: lambda row: a(row) and b(row))(left, right)
        return left

    def _not(self) -> FilterFn:
        if self._peek() == ("name", "not"):
            self._take()
            self._count()
            inner = self._not()
            return lambda row: not inner(row)
        return self._primary()

    def _primary(self) -> FilterFn:
        token = self._peek()
        if token == ("punct", "("):
            self._take()
            inner = self._or()
            self._expect(")")
            return inner
        is_call = self.pos + 1 < len(self.tokens) and self.tokens[self.pos + 1] == ("punct", "(")
        if token[0] == "name" and token[1] in _FUNCTIONS and is_call:
            return self._function()
        fold = token[0] == "name" and token[1] in self.fold
        left = self._operand()
        op_token = self._peek()
        if op_token[0] != "name" or op_token[1] not in ("eq", "ne", *_COMPARISONS):
            if op_token[0] in ("end", "punct") or op_token in (("name", "and"), ("name", "or")):
                return lambda row: left(row) is True  # a bare boolean property
            raise odata_error(f"Unknown operator '{op_token[1]}' in '{self.text}'.")
        self._take()
        self._count()
        fold = fold or (self._peek()[0] == "name" and self._peek()[1] in self.fold)
        right = self._operand()
        op = str(op_token[1])
        return lambda row: _compare(op, left(row), right(row), fold)

    def _function(self) -> FilterFn:
        test = _FUNCTIONS[self._take()[1]]
        self._count()
        self._expect("(")
        subject = self._operand()
        self._expect(",")
        argument = self._operand()
        self._expect(")")

        def apply(row: RawIndicator) -> bool:
            value, part = subject(row), argument(row)
            if not isinstance(part, str):
                return False
            if isinstance(value, list):
                return any(isinstance(item, str) and test(item, part) for item in value)
            return isinstance(value, str) and test(value, part)

        return apply

    def _operand(self) -> FilterFn:
        kind, value = self._take()
        self._count()
        if kind == "lit":
            return lambda row: value
        if kind == "name":
            if value not in FILTER_FIELDS:
                raise odata_error(f"Could not find a property named '{value}' on type 'Indicator'.")
            name = str(value)
            return lambda row: row.get(name)
        raise odata_error(f"Unexpected '{value}' in '{self.text}'.")


def compile_filter(
    text: str,
    *,
    fold: frozenset[str] = frozenset(),
    allow_or: bool = True,
    node_limit: int | None = None,
) -> FilterFn:
    """Compile an OData ``$filter`` over the filterable fields; raises ApiError ``ODataError``.

    ``fold``: fields whose ``eq``/``ne`` ignore case; ``allow_or`` False refuses ``or``;
    ``node_limit``: the most parse-tree nodes accepted (None: no limit)."""
    return _FilterParser(text, fold, allow_or, node_limit).parse()
