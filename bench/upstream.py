"""A fast OpenAI-compatible upstream for the benchmarks: fixed answers, configurable chunks and latency.

Written so that it is never the bottleneck: a bare ``asyncio.Protocol`` (uvloop when installed), HTTP/1.1 keep-alive
parsed by hand, every response byte string built once at start-up. It answers

* ``POST .../chat/completions`` — a completion, or with ``"stream": true`` an SSE stream of ``chunks`` chunks (each
  one word of content; the last one carries ``finish_reason``) and ``data: [DONE]``, sent with chunked encoding;
* ``GET .../models`` — one model; ``GET /health`` — ``ok``.

Latency is per URL, so one server plays several providers: ``http://127.0.0.1:PORT/o/ttfb=2000,gap=5,chunks=10/v1``
waits 2000 ms before the response headers, 5 ms between chunks, and streams 10 chunks. Without the ``/o/...``
prefix the command-line defaults apply. A client that hangs up mid-wait is noticed and nothing more is sent.

Run: ``python bench/upstream.py --port 0 --chunks 50`` (prints ``PORT <n>`` once it listens).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, cast

MODEL = "bench-model"
WORD = "tok "


@dataclass(frozen=True)
class Opts:
    chunks: int = 50
    ttfb_ms: float = 0.0
    gap_ms: float = 0.0


def _chunk_event(i: int, last: bool) -> bytes:
    delta: dict[str, Any] = {"content": WORD}
    if i == 0:
        delta = {"role": "assistant", "content": WORD}
    payload = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": "stop" if last else None}],
    }
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Responses:
    """Every byte an answer needs, built once per chunk count."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        completion = {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1700000000,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": WORD * chunks, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": chunks, "total_tokens": 5 + chunks},
            "system_fingerprint": None,
        }
        body = json.dumps(completion, separators=(",", ":")).encode()
        self.completion_body = body
        self.completion = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: keep-alive\r\n\r\n%s" % (len(body), body)
        )
        self.stream_head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
        )
        self.events = [_http_chunk(_chunk_event(i, i == chunks - 1)) for i in range(chunks)]
        self.tail = _http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        # All at once (no gap): one write.
        self.stream_all = self.stream_head + b"".join(self.events) + self.tail


def _simple(status: str, body: bytes, ctype: str = "application/json") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: keep-alive\r\n\r\n%s" % (
        status.encode(),
        ctype.encode(),
        len(body),
        body,
    )


MODELS = _simple(
    "200 OK",
    json.dumps(
        {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}]}
    ).encode(),
)
HEALTH = _simple("200 OK", b"ok", "text/plain")
NOT_FOUND = _simple("404 Not Found", b'{"error":{"message":"not found","type":"invalid_request_error"}}')


class Server:
    def __init__(self, defaults: Opts) -> None:
        self.defaults = defaults
        self._responses: dict[int, Responses] = {}
        self._opts: dict[bytes, tuple[Opts, bytes]] = {}

    def responses(self, chunks: int) -> Responses:
        r = self._responses.get(chunks)
        if r is None:
            r = self._responses[chunks] = Responses(chunks)
        return r

    def route(self, path: bytes) -> tuple[Opts, bytes]:
        """The options a path asks for (``/o/k=v,.../rest``) and the rest of the path."""
        hit = self._opts.get(path)
        if hit is not None:
            return hit
        opts, rest = self.defaults, path
        if path.startswith(b"/o/"):
            spec, _, tail = path[3:].partition(b"/")
            rest = b"/" + tail
            values: dict[str, float] = {}
            for item in spec.decode().split(","):
                k, _, v = item.partition("=")
                if k:
                    values[k] = float(v)
            opts = Opts(
                chunks=int(values.get("chunks", self.defaults.chunks)),
                ttfb_ms=values.get("ttfb", self.defaults.ttfb_ms),
                gap_ms=values.get("gap", self.defaults.gap_ms),
            )
        if len(self._opts) < 1000:
            self._opts[path] = (opts, rest)
        return opts, rest


class Conn(asyncio.Protocol):
    __slots__ = ("_buf", "_busy", "_closed", "_handles", "_loop", "_server", "_t")

    def __init__(self, server: Server) -> None:
        self._server = server
        self._buf = b""
        self._busy = False
        self._closed = False
        self._handles: list[asyncio.TimerHandle] = []
        self._t: asyncio.Transport  # set by connection_made, before any data arrives
        self._loop = asyncio.get_event_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._t = cast(asyncio.Transport, transport)  # a stream server's (uvloop's does not subclass it)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        for h in self._handles:
            h.cancel()
        self._handles.clear()

    def data_received(self, data: bytes) -> None:
        self._buf = self._buf + data if self._buf else data
        if not self._busy:
            self._next()

    def _next(self) -> None:
        while not self._busy and not self._closed:
            buf = self._buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = buf[:end]
            line_end = head.find(b"\r\n")
            request_line = head[:line_end] if line_end >= 0 else head
            parts = request_line.split(b" ")
            if len(parts) < 2:
                self._t.close()
                return
            method, path = parts[0], parts[1]
            length = 0
            lower = head.lower()
            i = lower.find(b"\r\ncontent-length:")
            if i >= 0:
                j = lower.find(b"\r\n", i + 2)
                length = int(lower[i + 17 : j if j >= 0 else len(lower)].strip())
            if len(buf) < end + 4 + length:
                return
            body = buf[end + 4 : end + 4 + length]
            self._buf = buf[end + 4 + length :]
            self._handle(method, path, body)

    def _handle(self, method: bytes, path: bytes, body: bytes) -> None:
        t = self._t
        assert t is not None
        opts, rest = self._server.route(path.split(b"?", 1)[0])
        if method == b"POST" and rest.endswith(b"/chat/completions"):
            stream = b'"stream":true' in body or b'"stream": true' in body
            resp = self._server.responses(opts.chunks)
            if opts.ttfb_ms <= 0 and (not stream or opts.gap_ms <= 0):
                t.write(resp.stream_all if stream else resp.completion)
                return
            self._busy = True
            self._later(opts.ttfb_ms, self._start, resp, stream, opts.gap_ms)
        elif method == b"GET" and rest.endswith(b"/models"):
            t.write(MODELS)
        elif method == b"GET" and rest == b"/health":
            t.write(HEALTH)
        else:
            t.write(NOT_FOUND)

    def _later(self, ms: float, fn: Any, *args: Any) -> None:
        if ms <= 0:
            fn(*args)
            return
        self._handles.append(self._loop.call_later(ms / 1000.0, fn, *args))

    def _start(self, resp: Responses, stream: bool, gap_ms: float) -> None:
        if self._closed:
            return
        t = self._t
        assert t is not None
        if not stream:
            t.write(resp.completion)
            self._done()
        elif gap_ms <= 0:
            t.write(resp.stream_all)
            self._done()
        else:
            t.write(resp.stream_head + resp.events[0])
            self._later(gap_ms, self._event, resp, 1, gap_ms)

    def _event(self, resp: Responses, i: int, gap_ms: float) -> None:
        if self._closed:
            return
        t = self._t
        assert t is not None
        self._handles = [h for h in self._handles if not h.cancelled()][-4:]
        if i < resp.chunks:
            t.write(resp.events[i])
            self._later(gap_ms, self._event, resp, i + 1, gap_ms)
        else:
            t.write(resp.tail)
            self._done()

    def _done(self) -> None:
        self._busy = False
        self._handles.clear()
        if self._buf:
            self._next()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--chunks", type=int, default=50)
    ap.add_argument("--ttfb-ms", type=float, default=0.0)
    ap.add_argument("--gap-ms", type=float, default=0.0)
    ap.add_argument("--no-uvloop", action="store_true")
    args = ap.parse_args()
    if not args.no_uvloop:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
    server = Server(Opts(args.chunks, args.ttfb_ms, args.gap_ms))

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(lambda: Conn(server), args.host, args.port, backlog=1024)
        port = srv.sockets[0].getsockname()[1]
        loop_name = type(loop).__module__.split(".")[0]
        print(f"PORT {port} {loop_name} pid={os.getpid()}", flush=True)
        # Stop when the parent goes away (stdin closes), so no server outlives a benchmark run.
        if sys.stdin is None or sys.stdin.isatty():
            await asyncio.Event().wait()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        await reader.read()
        srv.close()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
