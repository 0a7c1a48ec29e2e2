"""A fault-injecting OpenAI-compatible server, for failures no real server produces on demand.

It speaks just enough HTTP/1.1 by hand (asyncio streams in a background thread) to misbehave precisely: answer
429 with Retry-After, any 5xx, close before the headers, reset after N chunks, stall before the first byte or in
mid-stream, send malformed SSE or JSON, send an error frame after 200, end without ``[DONE]``, or answer empty.

Each *scenario* has its own base URL (``server.scenario("name", Ok(), ...)`` → ``http://127.0.0.1:P/s/name/v1``),
so one server can play several providers. A scenario's behaviours are used one per request, the last repeating.
Every request is recorded with its arrival time, body, headers and when its connection closed, so tests can check
that a retry respected Retry-After or that a cancelled hedge really hung up.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from tests.support._serving import LoopThread, Scripted

# -- behaviours --------------------------------------------------------------------------------------------------

#: What the misbehaving streams say before they misbehave, unless given a ``text``.
FILLER = "alpha beta gamma delta epsilon zeta"


@dataclass
class Ok:
    """A normal answer: ``chunks`` text pieces when streaming (``text`` split in words), else one completion."""

    text: str = "Hello from the fault server."
    delay_first: float = 0.0  # seconds before the status line (a slow first token)
    delay_between: float = 0.0
    finish_reason: str = "stop"
    send_done: bool = True
    usage: bool = True
    #: Answer a resume: when the request carries an assistant message that begins ``text``, send only the rest.
    continues: bool = False
    #: Refuse a trailing assistant message (prefill) with 400, as OpenAI-compatible servers without prefill do.
    reject_prefill: bool = False


@dataclass
class Status:
    """An error status with an OpenAI-style body (or ``raw`` body) and extra headers (e.g. Retry-After)."""

    code: int
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "injected failure"
    raw: bytes | None = None


@dataclass
class CloseBeforeHeaders:
    """Read the request, then close the connection without a word."""


@dataclass
class ResetAfter:
    """Stream ``n`` content chunks, then drop the connection (no [DONE])."""

    n: int
    text: str = "one two three four five six seven eight"


@dataclass
class Stall:
    """Stall (until the server stops or ``release()``) before the first byte, or after ``after_chunks`` chunks.

    ``keepalive`` sends SSE comment lines while stalling, as proxies and some servers do: bytes flow, no tokens.
    """

    after_chunks: int | None = None
    keepalive: float | None = None
    text: str = FILLER


@dataclass
class Malformed:
    """A 200 stream whose ``after_chunks``-th event is not JSON (or a non-stream body that is not JSON)."""

    after_chunks: int = 0
    text: str = FILLER


@dataclass
class ErrorFrame:
    """200 and then an ``{"error": ...}`` frame after ``after_chunks`` chunks."""

    after_chunks: int = 0
    type: str = "server_error"
    code: Any = None
    message: str = "upstream exploded"
    text: str = FILLER


@dataclass
class Truncate:
    """Stream ``n`` chunks then end the body cleanly but with neither [DONE] nor a finish_reason."""

    n: int = 2
    text: str = FILLER


@dataclass
class Empty:
    """200 with empty content and no tool calls."""


Behaviour = Ok | Status | CloseBeforeHeaders | ResetAfter | Stall | Malformed | ErrorFrame | Truncate | Empty


@dataclass
class Record:
    scenario: str
    path: str
    method: str
    headers: dict[str, str]
    body: Any
    arrived: float
    peer: tuple[str, int]
    closed: float | None = None
    behaviour: str = ""


# -- the server --------------------------------------------------------------------------------------------------


def _chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    payload = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _completion(cid: str, model: str, text: str, finish: str = "stop") -> bytes:
    return json.dumps(
        {
            "id": cid,
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": 3,
                "completion_tokens": len(text.split()),
                "total_tokens": 3 + len(text.split()),
            },
        }
    ).encode()


def _words(text: str) -> list[str]:
    parts = text.split(" ")
    return [w for w in (p if i == 0 else " " + p for i, p in enumerate(parts)) if w]


def _prefill(body: Any) -> str | None:
    """The partial answer a resume request carries (its last assistant message), if any."""
    messages = body.get("messages") if isinstance(body, dict) else None
    for m in reversed(messages or []):
        if isinstance(m, dict) and m.get("role") == "assistant" and isinstance(m.get("content"), str):
            return str(m["content"])
    return None


def _trailing_assistant(body: Any) -> bool:
    messages = body.get("messages") if isinstance(body, dict) else None
    return (
        isinstance(messages, list)
        and bool(messages)
        and isinstance(messages[-1], dict)
        and (messages[-1].get("role") == "assistant")
    )


class FaultServer(Scripted[Behaviour], LoopThread):
    def __init__(self) -> None:
        Scripted.__init__(self, Ok())
        LoopThread.__init__(self, "fault-server")
        self.records: list[Record] = []
        self._release: asyncio.Event | None = None
        #: Bugs in the server itself (not injected faults); the fixture fails the test if there are any.
        self.handler_errors: list[BaseException] = []

    # lifecycle

    async def _on_start(self) -> None:
        self._release = asyncio.Event()

    def _on_stop(self) -> None:
        assert self._release is not None
        self._release.set()

    def release(self) -> None:
        """Let every stalled response go on (they then end the connection)."""

        def _set() -> None:
            assert self._release is not None
            self._release.set()

        self._loop.call_soon_threadsafe(_set)

    # scenarios

    def scenario(self, name: str, *behaviours: Behaviour) -> str:
        """Register behaviours for ``name`` (one per request, the last repeating); returns its base URL."""
        self._script(name, behaviours)
        return f"{self.url}/s/{name}/v1"

    def requests(self, scenario: str | None = None) -> list[Record]:
        with self._lock:
            return [r for r in self.records if scenario is None or r.scenario == scenario]

    # HTTP

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        peer = writer.get_extra_info("peername")[:2]
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body_bytes = await reader.readexactly(int(headers.get("content-length", "0")))
                try:
                    body = json.loads(body_bytes) if body_bytes else None
                except ValueError:
                    body = body_bytes
                parts = path.split("/")
                scenario = parts[2] if len(parts) > 2 and parts[1] == "s" else "default"
                record = Record(scenario, path, method, headers, body, time.monotonic(), peer)
                with self._lock:
                    self.records.append(record)
                keep = await self._respond(reader, writer, record, path, body)
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as e:
            self.handler_errors.append(e)
        finally:
            self._mark_closed(writer)

    def _mark_closed(self, writer: asyncio.StreamWriter) -> None:
        now = time.monotonic()
        with self._lock:
            for r in self.records:
                if r.closed is None and getattr(r, "_writer", None) is writer:
                    r.closed = now
        self._writers.discard(writer)
        writer.close()

    async def _send_head(
        self, writer: asyncio.StreamWriter, code: int, headers: dict[str, str], length: int | None
    ) -> None:
        reason = {200: "OK", 429: "Too Many Requests"}.get(code, "Status")
        hdrs = {"content-type": "application/json", **headers}
        if length is not None:
            hdrs["content-length"] = str(length)
        out = f"HTTP/1.1 {code} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        writer.write(out.encode())
        await writer.drain()

    async def _pause(self, reader: asyncio.StreamReader, seconds: float | None) -> bool:
        """Wait ``seconds`` (None: until released) unless the client hangs up first; True if it did."""
        assert self._release is not None
        eof = asyncio.ensure_future(reader.read(1))
        waiter = asyncio.ensure_future(asyncio.sleep(seconds) if seconds is not None else self._release.wait())
        try:
            done, _ = await asyncio.wait({eof, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (eof, waiter):
                t.cancel()
            # Let the cancelled read finish, or the next request's readuntil() finds the reader still taken.
            await asyncio.gather(eof, waiter, return_exceptions=True)
        return eof in done

    async def _wait_release(
        self, keepalive: float | None, writer: asyncio.StreamWriter, reader: asyncio.StreamReader
    ) -> None:
        assert self._release is not None
        if keepalive is None:
            await self._pause(reader, None)
            return
        while not self._release.is_set():
            writer.write(b": keep-alive\n\n")
            await writer.drain()
            if await self._pause(reader, keepalive):
                return

    async def _respond(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: Record, path: str, body: Any
    ) -> bool:
        record._writer = writer  # type: ignore[attr-defined]
        if path.endswith("/models"):
            data = json.dumps(
                {
                    "object": "list",
                    "data": [{"id": "fault-model", "object": "model", "created": 0, "owned_by": "tests"}],
                }
            ).encode()
            await self._send_head(writer, 200, {}, len(data))
            writer.write(data)
            await writer.drain()
            return True
        b = self._next(record.scenario)
        record.behaviour = type(b).__name__
        stream = isinstance(body, dict) and bool(body.get("stream"))
        model = body.get("model", "m") if isinstance(body, dict) else "m"
        cid = f"chatcmpl-{record.scenario}-{len(self.records)}"

        if isinstance(b, Status):
            data = (
                b.raw
                if b.raw is not None
                else json.dumps(
                    {"error": {"message": b.message, "type": "injected", "param": None, "code": None}}
                ).encode()
            )
            await self._send_head(writer, b.code, b.headers, len(data))
            writer.write(data)
            await writer.drain()
            return True
        if isinstance(b, CloseBeforeHeaders):
            return False
        if isinstance(b, Stall) and b.after_chunks is None:
            await self._wait_release(None, writer, reader)
            return False
        if isinstance(b, Ok) and b.delay_first and await self._pause(reader, b.delay_first):
            return False
        if isinstance(b, Ok) and b.reject_prefill and _trailing_assistant(body):
            data = json.dumps(
                {
                    "error": {
                        "message": "the last message must have the user role (assistant prefill is not supported)",
                        "type": "invalid_request_error",
                        "param": "messages",
                        "code": None,
                    }
                }
            ).encode()
            await self._send_head(writer, 400, {}, len(data))
            writer.write(data)
            await writer.drain()
            return True
        if isinstance(b, Ok) and b.continues:
            done = _prefill(body)
            if done and b.text.startswith(done):
                b = Ok(**{**b.__dict__, "text": b.text[len(done) :], "continues": False})

        if not stream:
            if isinstance(b, Malformed):
                data = b'{"id": "x", "choices": [ this is not json'
            elif isinstance(b, ErrorFrame):
                data = json.dumps({"error": {"message": b.message, "type": b.type, "code": b.code}}).encode()
            elif isinstance(b, Empty):
                data = _completion(cid, model, "")
            elif isinstance(b, Ok):
                data = _completion(cid, model, b.text, b.finish_reason)
            else:
                data = _completion(cid, model, "partial")
            await self._send_head(writer, 200, {}, len(data))
            writer.write(data)
            await writer.drain()
            return True

        # streaming: no content-length, close delimits the body
        await self._send_head(writer, 200, {"content-type": "text/event-stream", "connection": "close"}, None)
        writer.write(_chunk(cid, model, {"role": "assistant", "content": ""}))
        if isinstance(b, Empty):
            writer.write(_chunk(cid, model, {}, "stop") + b"data: [DONE]\n\n")
            await writer.drain()
            return False
        text = getattr(b, "text", FILLER)
        words = _words(text)
        limit = {ResetAfter: getattr(b, "n", 0), Truncate: getattr(b, "n", 0)}.get(type(b), len(words))
        stop_at = getattr(b, "after_chunks", None)
        for i, w in enumerate(words[:limit]):
            if stop_at is not None and i == stop_at:
                break
            writer.write(_chunk(cid, model, {"content": w}))
            await writer.drain()
            if isinstance(b, Ok) and b.delay_between and await self._pause(reader, b.delay_between):
                return False
        if isinstance(b, Stall):
            await self._wait_release(b.keepalive, writer, reader)
            return False
        if isinstance(b, Malformed):
            writer.write(b"data: {this is not json\n\n")
            await writer.drain()
            return False
        if isinstance(b, ErrorFrame):
            err = {"error": {"message": b.message, "type": b.type, "code": b.code}}
            writer.write(b"data: " + json.dumps(err).encode() + b"\n\n")
            await writer.drain()
            return False
        if isinstance(b, (ResetAfter, Truncate)):
            if isinstance(b, ResetAfter):
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    import socket
                    import struct

                    # SO_LINGER 0: close sends RST, a real connection reset.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        assert isinstance(b, Ok)
        writer.write(_chunk(cid, model, {}, b.finish_reason))
        if b.usage:
            writer.write(
                b"data: "
                + json.dumps(
                    {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": 1700000000,
                        "model": model,
                        "choices": [],
                        "usage": {"prompt_tokens": 3, "completion_tokens": len(words), "total_tokens": 3 + len(words)},
                    }
                ).encode()
                + b"\n\n"
            )
        if b.send_done:
            writer.write(b"data: [DONE]\n\n")
        await writer.drain()
        return False
