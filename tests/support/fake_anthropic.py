"""A fake Anthropic Messages upstream: answers ``POST /v1/messages`` (and ``/v1/messages/count_tokens``) with
scripted events, as Anthropic's API sends them, and records every request.

No real Anthropic server can run here (no network, no key), so pass-through tests need a stand-in that speaks the
documented wire format exactly, including what polychat must not lose: thinking blocks with signatures, cache
token counts, ``event: error`` after a 200. Each scenario has its own root URL (``fake.scenario("name", ...)`` →
``http://127.0.0.1:P/s/name``, the API root a provider's ``base_url`` takes); its behaviours are used one per
request, the last repeating.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support._serving import HTTPThread, Scripted

Event = tuple[str, dict[str, Any]]


def _ev(kind: str, **fields: Any) -> Event:
    return kind, {"type": kind, **fields}


def _delta(index: int, kind: str, key: str, value: str) -> Event:
    return _ev("content_block_delta", index=index, delta={"type": kind, key: value})


SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
CACHE = {"cache_creation_input_tokens": 7, "cache_read_input_tokens": 100}


def thinking_answer(model: str = "claude-fake-1", text: str = "Paris is the capital.") -> list[Event]:
    """A streamed answer with a signed thinking block, a text block and cache token counts."""
    half = len(text) // 2
    message: dict[str, Any] = {
        "id": "msg_fake01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 12, **CACHE, "output_tokens": 1},
    }
    return [
        _ev("message_start", message=message),
        _ev("content_block_start", index=0, content_block={"type": "thinking", "thinking": "", "signature": ""}),
        _ev("ping"),
        _delta(0, "thinking_delta", "thinking", "The user asks about France. "),
        _delta(0, "thinking_delta", "thinking", "Its capital is Paris."),
        _delta(0, "signature_delta", "signature", SIGNATURE),
        _ev("content_block_stop", index=0),
        _ev("content_block_start", index=1, content_block={"type": "text", "text": ""}),
        _delta(1, "text_delta", "text", text[:half]),
        _delta(1, "text_delta", "text", text[half:]),
        _ev("content_block_stop", index=1),
        _ev(
            "message_delta",
            delta={"stop_reason": "end_turn", "stop_sequence": None},
            usage={"input_tokens": 12, **CACHE, "output_tokens": 25},
        ),
        _ev("message_stop"),
    ]


def message_of(events: list[Event]) -> dict[str, Any]:
    """The non-stream answer equivalent to ``events`` (how Anthropic's API assembles it)."""
    message: dict[str, Any] = {}
    blocks: list[dict[str, Any]] = []
    partial: dict[int, str] = {}
    for _, ev in events:
        kind = ev["type"]
        if kind == "message_start":
            message = json.loads(json.dumps(ev["message"]))
        elif kind == "content_block_start":
            blocks.append(json.loads(json.dumps(ev["content_block"])))
        elif kind == "content_block_delta":
            block, delta = blocks[ev["index"]], ev["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            elif delta["type"] == "input_json_delta":
                partial[ev["index"]] = partial.get(ev["index"], "") + delta["partial_json"]
        elif kind == "message_delta":
            message.update(ev["delta"])
            message["usage"].update(ev["usage"])
    for index, text in partial.items():
        blocks[index]["input"] = json.loads(text) if text else {}
    message["content"] = blocks
    return message


# -- checks of what a client receives -------------------------------------------------------------------------


def sse_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of an SSE body, checking that every event names itself as its data's type."""
    out = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"], block
        out.append((lines["event"], data))
    return out


def check_grammar(events: list[tuple[str, dict[str, Any]]]) -> None:
    """Anthropic's stream grammar: message_start, then blocks opened, filled and closed one at a time with
    increasing indexes, then one message_delta and message_stop; ping anywhere."""
    names = [n for n, _ in events if n != "ping"]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"], names
    open_index: int | None = None
    expected = 0
    for name, data in events[1:-2]:
        if name == "content_block_start":
            assert open_index is None and data["index"] == expected
            open_index = data["index"]
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index, expected = None, expected + 1
        else:
            assert name == "ping", name
    assert open_index is None


@dataclass
class Answer:
    """Answer with ``events`` (streamed, or assembled into one message when the request does not stream)."""

    events: list[Event] = field(default_factory=thinking_answer)


@dataclass
class CutAfter:
    """Stream the first ``n`` events of ``events``, then drop the connection."""

    n: int
    events: list[Event] = field(default_factory=thinking_answer)


@dataclass
class Fail:
    """An error status with Anthropic's error body."""

    status: int
    type: str = "overloaded_error"
    message: str = "Overloaded"


@dataclass
class ErrorEvent:
    """200, the first ``n`` events, then ``event: error`` (as Anthropic does when overloaded mid-stream)."""

    n: int
    events: list[Event] = field(default_factory=thinking_answer)


Behaviour = Answer | CutAfter | Fail | ErrorEvent


@dataclass
class Request:
    scenario: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeAnthropic(Scripted[Behaviour], HTTPThread):
    def __init__(self) -> None:
        Scripted.__init__(self, Answer())
        self.requests: list[Request] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        HTTPThread.__init__(self, Handler)

    def scenario(self, name: str, *behaviours: Behaviour) -> str:
        self._script(name, behaviours)
        return f"http://127.0.0.1:{self.port}/s/{name}"

    def requests_for(self, scenario: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.scenario == scenario]

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("content-length") or 0)
        body = json.loads(h.rfile.read(length) or b"null")
        parts = h.path.split("/")
        scenario = parts[2] if len(parts) > 2 and parts[1] == "s" else "default"
        with self._lock:
            self.requests.append(Request(scenario, h.path, {k.lower(): v for k, v in h.headers.items()}, body))
        if h.path.endswith("/count_tokens"):
            return _json(h, 200, {"input_tokens": 42})
        b = self._next(scenario)
        if isinstance(b, Fail):
            return _json(h, b.status, {"type": "error", "error": {"type": b.type, "message": b.message}})
        if not (isinstance(body, dict) and body.get("stream")):
            if isinstance(b, (CutAfter, ErrorEvent)):
                return _json(h, 529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            return _json(h, 200, message_of(b.events))
        events = b.events if isinstance(b, Answer) else b.events[: b.n]
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.send_header("connection", "close")
        h.end_headers()
        for name, payload in events:
            h.wfile.write(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())
            h.wfile.flush()
        if isinstance(b, ErrorEvent):
            err = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
            h.wfile.write(f"event: error\ndata: {json.dumps(err)}\n\n".encode())
            h.wfile.flush()
        if isinstance(b, CutAfter):
            h.connection.shutdown(socket.SHUT_RDWR)
        h.close_connection = True


def _json(h: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
    data = json.dumps(payload).encode()
    h.send_response(status)
    h.send_header("content-type", "application/json")
    h.send_header("content-length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)
