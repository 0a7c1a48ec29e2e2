"""Server-sent events decoding: bytes in, events out, no I/O.

Follows the WHATWG event-stream rules that OpenAI-style servers rely on: lines end in CR, LF or CRLF (a CRLF split
across two network reads is still one line end); lines starting with ``:`` are comments (keep-alives); several
``data:`` lines of one event join with ``\\n``; a blank line dispatches the event. UTF-8 is decoded per complete
line, so a multi-byte character split across reads is never mangled.
"""

from __future__ import annotations

import msgspec


class ServerSentEvent(msgspec.Struct, frozen=True):
    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Incremental decoder. ``feed(chunk)`` returns the events completed by that chunk; ``flush()`` at the end
    returns an event left without its closing blank line (servers that just close the connection)."""

    __slots__ = ("_buf", "_data", "_event", "_id", "_pending_cr", "_retry")

    def __init__(self) -> None:
        self._buf = b""
        self._pending_cr = False
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if not chunk:
            return []
        if self._pending_cr:
            # The previous read ended in CR; a LF starting this one belongs to the same line end.
            self._pending_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buf = self._buf + chunk if self._buf else chunk
        events: list[ServerSentEvent] = []
        if b"\r" not in buf:
            # Fast path: plain LF framing, which is what nearly every server sends.
            *lines, self._buf = buf.split(b"\n")
            for line in lines:
                ev = self._line(line)
                if ev is not None:
                    events.append(ev)
            return events
        start = 0
        n = len(buf)
        while True:
            cr = buf.find(b"\r", start)
            lf = buf.find(b"\n", start)
            if cr == -1 and lf == -1:
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, nxt = lf, lf + 1
            elif cr + 1 < n:
                end, nxt = cr, cr + 2 if buf[cr + 1 : cr + 2] == b"\n" else cr + 1
            else:
                end, nxt = cr, cr + 1
                self._pending_cr = True
            ev = self._line(buf[start:end])
            if ev is not None:
                events.append(ev)
            start = nxt
        self._buf = buf[start:]
        return events

    def flush(self) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        if self._buf:
            ev = self._line(self._buf)
            self._buf = b""
            if ev is not None:
                events.append(ev)
        ev = self._line(b"")
        if ev is not None:
            events.append(ev)
        return events

    def _line(self, raw: bytes) -> ServerSentEvent | None:
        if not raw:
            if not self._data and self._event is None:
                return None
            ev = ServerSentEvent(
                data="\n".join(self._data), event=self._event or "message", id=self._id, retry=self._retry
            )
            self._data = []
            self._event = None
            self._retry = None
            return ev
        line = raw.decode("utf-8", errors="replace")
        if line[0] == ":":
            return None
        field, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id = value
        elif field == "retry" and value.isdigit():
            self._retry = int(value)
        return None
