"""Server-sent events, line by line: turns the lines of a ``text/event-stream`` body into
``SSEMessage`` values.

Owns: the SSE field grammar (``id``, ``event``, ``data``, ``retry``, comments, dispatch on a
blank line). Must not: do I/O, decode ``data`` (it stays the raw text), or decide what a
message means (messages without an ``id``, ``retry`` floors and event names are the reader's
business).

Rules, as OpenCTI and pycti speak them:

- A line starting with ``:`` is a comment (keep-alive) and is ignored.
- ``name: value`` loses exactly one space after the colon; a bare ``name`` has an empty value.
- Several ``data`` lines are joined with ``\\n``; ``event`` defaults to ``message``.
- ``retry`` counts only when it is all digits; an ``id`` containing NUL is ignored.
- A blank line dispatches the message gathered so far (nothing when nothing was gathered).
  Unlike browsers, an ``id`` does not carry over to later messages: OpenCTI gives every
  message that matters its own id, and pycti treats a message without one as having none.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["SSEMessage", "SSEParser"]


@dataclass(frozen=True)
class SSEMessage:
    """One dispatched SSE message (fields as received; ``id`` None when the message had none)."""

    id: str | None
    event: str
    data: str
    retry: int | None


class SSEParser:
    """Incremental ``text/event-stream`` parser: feed it lines, get messages on blank lines.

    Unlike browsers, an id does not carry over to later messages: OpenCTI gives every message
    that matters its own id, and pycti treats a message without one as having none.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._id: str | None = None
        self._event: str | None = None
        self._data: list[str] = []
        self._retry: int | None = None

    def feed(self, line: str) -> SSEMessage | None:
        """Take one line (without its line ending); return a message when one is complete."""
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # comment / keep-alive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEMessage | None:
        if self._id is None and self._event is None and not self._data and self._retry is None:
            return None
        message = SSEMessage(
            id=self._id,
            event=self._event or "message",
            data="\n".join(self._data),
            retry=self._retry,
        )
        self._reset()
        return message

    def parse(self, lines: Iterable[str]) -> list[SSEMessage]:
        """Parse a whole sequence of lines (handy in tests)."""
        out = []
        for line in lines:
            message = self.feed(line)
            if message is not None:
                out.append(message)
        return out
