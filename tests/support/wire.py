"""A loopback server that replays recorded wire fixtures byte for byte and records every request it received.

Modelled on :mod:`tests.support.faults`: hand-written HTTP/1.1 over asyncio streams in a background thread, so a
reply is exactly the fixture's bytes. Each *scenario* has its own base URL (``server.scenario("name", reply, ...)``
→ ``http://127.0.0.1:P/s/name``); the provider appends its own path (``/v1/messages``, ``/models/m:generateContent``,
``/api/chat``...), which is recorded with the query, headers and body, so tests can compare what polychat sent with
the request fixture. A scenario's replies are used one per request, the last repeating.

A :class:`Reply` is a status, headers and a body. Streaming bodies (``stream=True``) go out with chunked transfer
encoding, one HTTP chunk per ``split`` bytes (default: one per event, i.e. per blank-line or newline-terminated
frame) so parsers see events cut across reads; ``cut_after`` sends only that many body bytes and then resets the
connection (an interrupted stream); ``truncate`` ends the body cleanly after that many bytes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.support._serving import LoopThread, Scripted

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "wire"


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: bool = False
    split: int | None = None
    cut_after: int | None = None
    truncate: int | None = None

    @classmethod
    def fixture(cls, provider: str, name: str, **kwargs: Any) -> Reply:
        """A reply from ``tests/fixtures/wire/<provider>/<name>``; the content type follows the extension."""
        path = FIXTURES / provider / name
        body = path.read_bytes()
        ctype = {
            ".sse": "text/event-stream",
            ".ndjson": "application/x-ndjson",
            ".json": "application/json",
        }.get(path.suffix, "text/plain")
        stream = kwargs.pop("stream", path.suffix in (".sse", ".ndjson"))
        headers = {"content-type": ctype, **kwargs.pop("headers", {})}
        return cls(body=body, headers=headers, stream=stream, **kwargs)


@dataclass
class Received:
    scenario: str
    method: str
    path: str  # without the /s/<scenario> prefix
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def _frames(body: bytes) -> list[bytes]:
    """Split a stream body after each event (SSE: blank line; NDJSON: newline)."""
    sep = b"\n\n" if b"\n\n" in body else b"\n"
    out, start = [], 0
    while (i := body.find(sep, start)) != -1:
        out.append(body[start : i + len(sep)])
        start = i + len(sep)
    if start < len(body):
        out.append(body[start:])
    return out


class WireServer(Scripted[Reply], LoopThread):
    def __init__(self) -> None:
        Scripted.__init__(self, Reply(404, b'{"error": "no such scenario"}'))
        LoopThread.__init__(self, "wire-server")
        self.received: list[Received] = []
        self.handler_errors: list[BaseException] = []

    def scenario(self, name: str, *replies: Reply) -> str:
        self._script(name, replies)
        return f"{self.url}/s/{name}"

    def requests(self, scenario: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if scenario is None or r.scenario == scenario]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                parts = urlsplit(target)
                segs = parts.path.split("/")
                scenario = segs[2] if len(segs) > 2 and segs[1] == "s" else "default"
                path = "/" + "/".join(segs[3:]) if scenario != "default" else parts.path
                rec = Received(scenario, method, path, dict(parse_qsl(parts.query)), headers, body)
                with self._lock:
                    self.received.append(rec)
                if not await self._respond(writer, self._next(scenario)):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as e:  # a bug in this server, not an injected fault
            self.handler_errors.append(e)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _respond(self, writer: asyncio.StreamWriter, reply: Reply) -> bool:
        body = reply.body if reply.truncate is None else reply.body[: reply.truncate]
        hdrs = dict(reply.headers)
        if reply.stream:
            hdrs["transfer-encoding"] = "chunked"
        else:
            hdrs["content-length"] = str(len(body))
        head = f"HTTP/1.1 {reply.status} Status\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        writer.write(head.encode())
        if not reply.stream:
            writer.write(body)
            await writer.drain()
            return True
        sent = 0
        pieces = [body[i : i + reply.split] for i in range(0, len(body), reply.split)] if reply.split else _frames(body)
        for piece in pieces:
            if reply.cut_after is not None and sent + len(piece) > reply.cut_after:
                piece = piece[: reply.cut_after - sent]
                if piece:
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    await writer.drain()
                sock = writer.get_extra_info("socket")
                if sock is not None:  # SO_LINGER 0: close sends RST, a real connection reset
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return False
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            sent += len(piece)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


class CuttingRelay(LoopThread):
    """A TCP relay to a real server that resets the connection once ``cut_after`` bytes of the response body
    have passed (the header block is always relayed whole): an interrupted stream from a real upstream."""

    def __init__(self, upstream_host: str, upstream_port: int, cut_after: int) -> None:
        super().__init__("cutting-relay")
        self.upstream = (upstream_host, upstream_port)
        self.cut_after = cut_after
        self.cuts = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)

        async def pump_up() -> None:
            try:
                while data := await reader.read(65536):
                    up_writer.write(data)
                    await up_writer.drain()
            except ConnectionError:
                pass

        up = asyncio.ensure_future(pump_up())
        try:
            head = await up_reader.readuntil(b"\r\n\r\n")
            writer.write(head)
            sent = 0
            while sent < self.cut_after and (data := await up_reader.read(min(65536, self.cut_after - sent))):
                writer.write(data)
                sent += len(data)
            await writer.drain()
            self.cuts += 1
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            up.cancel()
            up_writer.close()
            writer.close()
