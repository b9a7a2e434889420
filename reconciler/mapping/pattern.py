"""The STIX 2.1 pattern parser (hand-written, tolerant; only what mapping needs):
``parse_stix_pattern`` turns a pattern into its deployable values (one per OR'ed alternative;
an AND of file hashes is one file with several hashes) or raises ``PatternRejected`` with
``invalid_pattern`` (does not parse) or ``unsupported_pattern`` (parses, cannot deploy).

It canonicalises hash algorithm names only: canonicalising and validating the values it finds
is the mapper's job. No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.mapping.models import ObservableValue
from reconciler.mapping.values import _canonical_hash_name
from reconciler.model import SkipReason

__all__ = ["PatternError", "PatternRejected", "parse_stix_pattern"]


class PatternRejected(ValueError):
    """Raised by ``parse_stix_pattern`` when a pattern yields nothing deployable; ``reason`` is
    ``invalid_pattern`` (does not parse) or ``unsupported_pattern`` (parses, cannot deploy)."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class PatternError(ValueError):
    """Internal: the pattern does not parse (→ ``invalid_pattern``)."""


class _Unsupported(Exception):
    """Internal: the pattern parses but cannot be deployed (→ ``unsupported_pattern``)."""


@dataclass(frozen=True)
class _Comparison:
    obj_type: str
    path: tuple[str, ...]
    op: str
    negated: bool
    value: str


_Dnf = list[list[_Comparison]]
_MAX_CONJUNCTS = 1000
_KEYWORDS_OBS = ("OR", "AND", "FOLLOWEDBY")
_QUALIFIERS = ("WITHIN", "START", "REPEATS")
_OPS = ("<=", ">=", "!=", "<>", "==", "=", "<", ">")
_WORD_OPS = ("LIKE", "MATCHES", "IN", "ISSUBSET", "ISSUPERSET")
_RE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RE_PREFIXED_STRING = re.compile(r"([thb])'")
_RE_LITERAL = re.compile(r"[+-]?\d+(\.\d+)?|true|false", re.IGNORECASE)
_RE_OBJECT_TYPE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*")
_RE_INDEX = re.compile(r"\[\s*(\*|\d+)\s*\]")
_RE_PROPERTY = re.compile(r"[A-Za-z0-9_\-]+")


class _Parser:
    """Recursive descent over the STIX 2.1 pattern grammar, producing a DNF of comparisons.
    Structures we cannot deploy (qualifiers, FOLLOWEDBY, AND across observations, operators
    other than ``=``) are parsed fully, then reported as unsupported."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.unsupported: list[str] = []

    # -- lexical helpers --
    def _ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def _peek(self, token: str) -> bool:
        self._ws()
        return self.text.startswith(token, self.pos)

    def _expect(self, token: str) -> None:
        if not self._peek(token):
            raise PatternError(f"expected {token!r} at offset {self.pos}")
        self.pos += len(token)

    def _peek_word(self) -> str | None:
        self._ws()
        m = _RE_WORD.match(self.text, self.pos)
        return m.group(0) if m else None

    def _keyword(self, *words: str) -> str | None:
        word = self._peek_word()
        if word is not None and word.upper() in words:
            end = self.pos + len(word)
            # An object type such as ``or-thing:value`` is not a keyword.
            if end < len(self.text) and self.text[end] in "-:":
                return None
            self.pos = end
            return word.upper()
        return None

    def _string(self) -> str:
        self._expect("'")
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if ch == "'":
                self.pos += 1
                return "".join(out)
            out.append(ch)
            self.pos += 1
        raise PatternError("unterminated string literal")

    def _literal(self) -> str:
        self._ws()
        if self._peek("'"):
            return self._string()
        m = _RE_PREFIXED_STRING.match(self.text, self.pos)
        if m:
            self.pos += 1
            return self._string()
        m = _RE_LITERAL.match(self.text, self.pos)
        if m:
            self.pos = m.end()
            return m.group(0)
        raise PatternError(f"expected a literal at offset {self.pos}")

    # -- grammar --
    def parse(self) -> _Dnf:
        self._ws()
        if not self.text.strip():
            raise PatternError("empty pattern")
        dnf = self._obs_or()
        self._ws()
        if self.pos != len(self.text):
            raise PatternError(f"unexpected text at offset {self.pos}")
        return dnf

    def _obs_or(self) -> _Dnf:
        dnf = self._obs_and()
        while self._keyword("OR"):
            dnf = dnf + self._obs_and()
            self._limit(dnf)
        return dnf

    def _obs_and(self) -> _Dnf:
        dnf = self._obs_seq()
        while self._keyword("AND"):
            self._obs_seq()
            self.unsupported.append("AND between observations")
        return dnf

    def _obs_seq(self) -> _Dnf:
        dnf = self._obs_atom()
        while self._keyword("FOLLOWEDBY"):
            self._obs_atom()
            self.unsupported.append("FOLLOWEDBY")
        return dnf

    def _obs_atom(self) -> _Dnf:
        if self._peek("["):
            self.pos += 1
            dnf = self._cmp_or()
            self._expect("]")
        elif self._peek("("):
            self.pos += 1
            dnf = self._obs_or()
            self._expect(")")
        else:
            raise PatternError(f"expected '[' at offset {self.pos}")
        while (qualifier := self._keyword(*_QUALIFIERS)) is not None:
            self._qualifier(qualifier)
            self.unsupported.append(f"qualifier {qualifier}")
        return dnf

    def _qualifier(self, qualifier: str) -> None:
        if qualifier == "WITHIN":
            self._literal()
            if self._keyword("SECONDS") is None:
                raise PatternError("WITHIN needs SECONDS")
        elif qualifier == "START":
            self._literal()
            if self._keyword("STOP") is None:
                raise PatternError("START needs STOP")
            self._literal()
        else:
            self._literal()
            if self._keyword("TIMES") is None:
                raise PatternError("REPEATS needs TIMES")

    def _cmp_or(self) -> _Dnf:
        dnf = self._cmp_and()
        while self._keyword("OR"):
            dnf = dnf + self._cmp_and()
            self._limit(dnf)
        return dnf

    def _cmp_and(self) -> _Dnf:
        dnf = self._cmp_atom()
        while self._keyword("AND"):
            right = self._cmp_atom()
            self._limit_size(len(dnf) * len(right))
            dnf = [left + r for left in dnf for r in right]
        return dnf

    def _cmp_atom(self) -> _Dnf:
        if self._peek("("):
            self.pos += 1
            dnf = self._cmp_or()
            self._expect(")")
            return dnf
        if self._keyword("EXISTS"):
            self._path()
            self.unsupported.append("EXISTS")
            return [[]]
        return [[self._comparison()]]

    def _comparison(self) -> _Comparison:
        obj_type, path = self._path()
        negated = self._keyword("NOT") is not None
        self._ws()
        op = next((o for o in _OPS if self.text.startswith(o, self.pos)), None)
        if op is not None:
            self.pos += len(op)
            value = self._literal()
        else:
            word = self._keyword(*_WORD_OPS)
            if word is None:
                raise PatternError(f"expected a comparison operator at offset {self.pos}")
            op = word
            if word == "IN":
                self._expect("(")
                value = self._literal()
                while self._peek(","):
                    self.pos += 1
                    self._literal()
                self._expect(")")
            else:
                value = self._literal()
        return _Comparison(obj_type, path, op, negated, value)

    def _path(self) -> tuple[str, tuple[str, ...]]:
        self._ws()
        m = _RE_OBJECT_TYPE.match(self.text, self.pos)
        if not m:
            raise PatternError(f"expected an object path at offset {self.pos}")
        obj_type = m.group(0).lower()
        self.pos = m.end()
        if not self.text.startswith(":", self.pos):
            raise PatternError(f"expected ':' after object type at offset {self.pos}")
        self.pos += 1
        parts = [self._path_component()]
        while self.pos < len(self.text) and self.text[self.pos] in ".[":
            if self.text[self.pos] == ".":
                self.pos += 1
                parts.append(self._path_component())
            else:
                m = _RE_INDEX.match(self.text, self.pos)
                if not m:
                    break  # not an index: leave it to the caller (e.g. a stray bracket)
                self.pos = m.end()
                parts.append(f"[{m.group(1)}]")
        return obj_type, tuple(parts)

    def _path_component(self) -> str:
        if self.text.startswith("'", self.pos):
            return self._string()
        m = _RE_PROPERTY.match(self.text, self.pos)
        if not m:
            raise PatternError(f"expected a property name at offset {self.pos}")
        self.pos = m.end()
        return m.group(0)

    def _limit(self, dnf: _Dnf) -> None:
        self._limit_size(len(dnf))

    def _limit_size(self, size: int) -> None:
        # An AND of ORs multiplies out; refuse before building something huge.
        if size > _MAX_CONJUNCTS:
            raise _Unsupported(f"more than {_MAX_CONJUNCTS} alternatives")


_STIX_TO_OPENCTI = {
    "ipv4-addr": "IPv4-Addr",
    "ipv6-addr": "IPv6-Addr",
    "domain-name": "Domain-Name",
    "hostname": "Hostname",
    "url": "Url",
    "file": "StixFile",
    "artifact": "Artifact",
    "email-addr": "Email-Addr",
    "mac-addr": "Mac-Addr",
    "x509-certificate": "X509-Certificate",
}
_VALUE_TYPES = frozenset({"ipv4-addr", "ipv6-addr", "domain-name", "hostname", "url"})
_FILE_TYPES = frozenset({"file", "artifact"})


def _opencti_type(stix_type: str) -> str:
    known = _STIX_TO_OPENCTI.get(stix_type)
    if known:
        return known
    return "-".join(part.capitalize() for part in stix_type.split("-"))


def parse_stix_pattern(pattern: str) -> tuple[ObservableValue, ...]:
    """Deployable values of a STIX pattern: one per OR'ed alternative; an AND of file hashes
    is one file with several hashes. Raises ``PatternRejected`` (a ``ValueError``) otherwise."""
    parser = _Parser(pattern)
    try:
        dnf = parser.parse()
    except PatternError as exc:
        raise PatternRejected(SkipReason.INVALID_PATTERN, str(exc)) from None
    except _Unsupported as exc:
        raise PatternRejected(SkipReason.UNSUPPORTED_PATTERN, str(exc)) from None
    if parser.unsupported:
        detail = ", ".join(sorted(set(parser.unsupported)))
        raise PatternRejected(SkipReason.UNSUPPORTED_PATTERN, f"not deployable: {detail}")
    return tuple(_conjunct_value(conjunct) for conjunct in dnf)


def _conjunct_value(conjunct: Sequence[_Comparison]) -> ObservableValue:
    for cmp in conjunct:
        if cmp.op not in {"=", "=="} or cmp.negated:
            op = ("NOT " if cmp.negated else "") + cmp.op
            raise PatternRejected(
                SkipReason.UNSUPPORTED_PATTERN, f"only '=' comparisons are deployable, not {op}"
            )
    types = sorted({cmp.obj_type for cmp in conjunct})
    if len(types) != 1:
        raise PatternRejected(
            SkipReason.UNSUPPORTED_PATTERN, f"one alternative combines {', '.join(types)}"
        )
    stix_type = types[0]
    if stix_type in _FILE_TYPES:
        hashes: dict[str, str] = {}
        for cmp in conjunct:
            if len(cmp.path) == 2 and cmp.path[0].lower() == "hashes":
                algo = _canonical_hash_name(cmp.path[1])
                if hashes.get(algo, cmp.value) != cmp.value:
                    raise PatternRejected(
                        SkipReason.UNSUPPORTED_PATTERN, f"conflicting {algo} values in one file"
                    )
                hashes[algo] = cmp.value
        return ObservableValue(type=_opencti_type(stix_type), value=None, hashes=hashes)
    if len(conjunct) != 1:
        raise PatternRejected(
            SkipReason.UNSUPPORTED_PATTERN, f"AND of several {stix_type} values is not deployable"
        )
    cmp = conjunct[0]
    if stix_type in _VALUE_TYPES and cmp.path != ("value",):
        raise PatternRejected(
            SkipReason.UNSUPPORTED_PATTERN,
            f"comparison on {stix_type}:{'.'.join(cmp.path)} is not deployable",
        )
    return ObservableValue(type=_opencti_type(stix_type), value=cmp.value)
