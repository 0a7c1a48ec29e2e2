"""One ASGI endpoint shell for every protocol the gateway speaks; a :class:`Dialect` supplies the protocol.

The shell does what does not depend on the protocol, once: Origin and API-key checks (before the body is read;
``Authorization: Bearer`` or ``x-api-key``), draining, the body-size limit, JSON parsing, the call through
:class:`polychat.AsyncClient` (routing, failover, resume), disconnect and shutdown handling, metrics and the
``x-polychat-provider`` header. The dialect turns a parsed JSON body into polychat's normalised call, and a
completion, a stream of chunks or an error back into its protocol's wire form:

* :mod:`._chat` — OpenAI Chat Completions (``POST /v1/chat/completions``);
* :mod:`._messages` — Anthropic Messages (``POST /v1/messages``);
* :mod:`._responses` — OpenAI Responses (``POST /v1/responses``).

A disconnecting client cancels the call: a watcher task waits for ``http.disconnect`` and cancels the serving
task, which closes the polychat stream (and so the upstream connection, or the embedded model's generation).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from .._streams import AsyncStream
from ..errors import InvalidRequestError, PolychatError
from ._errors import HTTPError, from_exception, make_error
from ._gateway import Call, refusal_error
from ._limits import Admission, Refusal

if TYPE_CHECKING:
    from ..errors import Attempt
    from ..providers.base import Provider
    from ..types import ChatCompletion, ChatCompletionChunk
    from ._gateway import Gateway

log = logging.getLogger("polychat.server")

Scope = dict[str, Any]
Receive = Any
Send = Any
Headers = list[tuple[bytes, bytes]]

_JSON = b"application/json"
_COMMON = [(b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"x-content-type-options", b"nosniff"),
]
_decode = msgspec.json.decode


class Parsed(msgspec.Struct):
    """A request in polychat's terms: what ``chat.completions.create`` gets, plus what the dialect needs later
    (``context``: e.g. the fields a Responses answer echoes)."""

    model: Any
    messages: Any
    stream: Any
    kwargs: dict[str, Any]
    context: Any = None


class StreamEncoder(Protocol):
    """Turns one answer's chunks into a protocol's stream bytes (stateful: one per request)."""

    def chunk(self, chunk: ChatCompletionChunk) -> bytes: ...

    def end(self) -> bytes: ...

    def fail(self, err: HTTPError) -> bytes: ...


class Dialect(Protocol):
    """A protocol the gateway speaks: its request parsing and its answer shapes."""

    path: str
    #: A minimal valid body, quoted in the error for a body that is not JSON.
    example: str

    def parse(self, data: dict[str, Any], headers: Headers) -> Parsed | HTTPError: ...

    def error(self, err: HTTPError) -> HTTPError: ...

    def completion(self, result: ChatCompletion, parsed: Parsed) -> bytes: ...

    def headers(self, parsed: Parsed, first: ChatCompletion | ChatCompletionChunk | None) -> Headers:
        """Response headers of its own, knowing the answer (or a stream's first chunk)."""
        ...

    def encoder(self, parsed: Parsed) -> StreamEncoder: ...


def header_value(name: str) -> bytes:
    return name.encode("latin-1", "replace")


async def send_error(send: Send, err: HTTPError, *, close: bool = False) -> None:
    headers = [(b"content-type", _JSON), (b"content-length", str(len(err.body)).encode()), *_COMMON, *err.headers]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": err.body})


def scan_headers(headers: Headers) -> tuple[bytes | None, bytes | None, bytes | None, bytes | None]:
    """Host, Origin, the key presented (``Authorization``, else ``x-api-key`` as a bearer token) and Content-Length,
    in one pass over a request's headers."""
    host = origin = authorization = api_key = length = None
    for name, value in headers:
        if name == b"authorization":
            authorization = value
        elif name == b"content-length":
            length = value
        elif name == b"host":
            host = value
        elif name == b"origin":
            origin = value
        elif name == b"x-api-key":
            api_key = value
    if authorization is None and api_key is not None:
        authorization = b"Bearer " + api_key  # Anthropic's clients send the key this way
    return host, origin, authorization, length


def _uncancel(task: asyncio.Task[Any] | None) -> None:
    uncancel = getattr(task, "uncancel", None)  # Python 3.11+
    if uncancel is not None:
        uncancel()


def _shutdown_error() -> HTTPError:
    return make_error(503, "The server is shutting down; the answer was cut short.", code="server_shutdown")


class Endpoint:
    """The ASGI app behind one protocol's path."""

    def __init__(self, gateway: Gateway, dialect: Dialect) -> None:
        self.gw = gateway
        self.dialect = dialect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        gw, dialect = self.gw, self.dialect
        if scope["method"] != "POST":
            refused = make_error(405, f"Use POST for {dialect.path}.", code="method_not_allowed")
            refused.headers.append((b"allow", b"POST"))
            return await send_error(send, dialect.error(refused))
        host, origin, authorization, length = scan_headers(scope["headers"])
        err = gw.check_api(host, origin, authorization)
        if err is not None:
            return await send_error(send, dialect.error(err))
        if gw.draining:
            gw.metrics.rejected.inc(("draining",))
            shutting = make_error(503, "The server is shutting down.", code="server_shutdown")
            return await send_error(send, dialect.error(shutting), close=True)
        body = await self._read_body(receive, send, length)
        if body is None:
            return
        parsed = self._parse(body, scope["headers"])
        if isinstance(parsed, HTTPError):
            return await send_error(send, dialect.error(parsed))
        admission = await gw.admit(authorization, parsed.model, parsed.messages, parsed.kwargs)
        if isinstance(admission, Refusal):
            return await send_error(send, dialect.error(refusal_error(admission)))

        task = asyncio.current_task()
        call = Call(task)
        watcher = asyncio.ensure_future(_watch_disconnect(receive, call))
        gw.inflight.add(call)
        try:
            await self._answer(call, send, parsed, t0, admission)
        except asyncio.CancelledError:
            if call.reason is None:
                raise
            _uncancel(task)
        finally:
            call.done = True
            gw.inflight.discard(call)
            watcher.cancel()

    # -- request --------------------------------------------------------------------------------------------------

    async def _read_body(self, receive: Receive, send: Send, length: bytes | None) -> bytes | None:
        limit = self.gw.settings.max_body_bytes
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared > limit:
                await self._too_large(send, limit)
                return None
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    await self._too_large(send, limit)
                    return None
                parts.append(chunk)
            if not message.get("more_body", False):
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _too_large(self, send: Send, limit: int) -> None:
        self.gw.metrics.rejected.inc(("too_large",))
        err = make_error(413, f"Request body too large: the limit is {limit} bytes.", code="request_too_large")
        await send_error(send, self.dialect.error(err), close=True)

    def _parse(self, body: bytes, headers: Headers) -> Parsed | HTTPError:
        metrics = self.gw.metrics
        try:
            data = _decode(body)
        except msgspec.DecodeError as e:
            metrics.rejected.inc(("bad_json",))
            return make_error(
                400,
                f"We could not parse the JSON body of your request ({e}). The body must be a JSON object such as "
                f"{self.dialect.example}, sent with Content-Type: application/json.",
                code="invalid_json",
            )
        except RecursionError:  # msgspec gives up on deep nesting with Python's own error
            metrics.rejected.inc(("bad_json",))
            return make_error(
                400, "The JSON body of your request is nested too deeply to be a request.", code="invalid_json"
            )
        if not isinstance(data, dict):
            metrics.rejected.inc(("bad_json",))
            return make_error(
                400, f"The request body must be a JSON object, not {type(data).__name__}.", code="invalid_json"
            )
        parsed = self.dialect.parse(data, headers)
        if isinstance(parsed, HTTPError):
            metrics.rejected.inc(("invalid",))
        return parsed

    # -- answer ---------------------------------------------------------------------------------------------------

    async def _answer(self, call: Call, send: Send, parsed: Parsed, t0: float, admission: Admission | None) -> None:
        """Make the call and send its answer (a completion, a stream, or an error in the client's protocol); then,
        however it ended, settle the key's admission and record the request's metrics."""
        gw = self.gw
        if admission is not None and parsed.stream is True:
            admission.prepare_stream(parsed.kwargs)
        tally = _Tally(gw.route_label(parsed.model), "true" if parsed.stream is True else "false")
        gw.metrics.in_flight.inc((tally.stream_label,))
        try:
            try:
                tally.routed, model = gw.route(parsed.model)
                result = await gw.client.chat.completions.create(
                    model, parsed.messages, parsed.stream, provider=tally.routed, **parsed.kwargs
                )
            except asyncio.CancelledError:
                if call.reason == "shutdown":
                    tally.status = 503
                    shutting = make_error(503, "The server is shutting down.", code="server_shutdown")
                    await send_error(send, self.dialect.error(shutting), close=True)
                raise
            except Exception as e:
                await self._send_failure(send, e, parsed, tally)
                return
            tally.provider = result.provider or "unknown"
            if isinstance(result, AsyncStream):
                tally.attempts = result.attempts  # the stream's own list: complete once the stream has ended
                tally.error, tally.usage = await self._stream(
                    call, send, result, parsed, tally.provider, tally.label, t0, admission
                )
            else:
                await self._send_completion(send, result, parsed, tally, admission)
        finally:
            if admission is not None:
                admission.finish(served=tally.served)
            self._record(call, tally, t0)

    async def _send_failure(self, send: Send, e: Exception, parsed: Parsed, tally: _Tally) -> None:
        """The error response for a call that failed before any answer: the provider that failed and the attempts
        made are in its headers."""
        gw = self.gw
        tally.error, tally.served = e, False
        err = from_exception(e, gw.scrub)
        if err.status == 404 and _is_unknown_model(e):
            err = gw.unknown_model(parsed.model, err)
        err = self.dialect.error(err)
        tally.status = err.status
        failed_by = getattr(e, "provider", None)
        if isinstance(failed_by, str) and failed_by:
            tally.provider = failed_by
            err.headers.append((b"x-polychat-provider", header_value(failed_by)))
        tally.attempts = getattr(e, "attempts", None) or []
        if tally.attempts:
            err.headers.append(gw.attempts_header(tally.attempts))
        self._log_failure(e, tally.status)
        await send_error(send, err)

    async def _send_completion(
        self, send: Send, result: ChatCompletion, parsed: Parsed, tally: _Tally, admission: Admission | None
    ) -> None:
        """A whole (non-streamed) answer, in the client's protocol."""
        tally.attempts = result.attempts
        tally.usage = result.usage
        if admission is not None:
            admission.usage = result.usage
        body = self.dialect.completion(result, parsed)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", _JSON),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-polychat-provider", header_value(tally.provider)),
                    self.gw.attempts_header(tally.attempts),
                    *_COMMON,
                    *self.dialect.headers(parsed, result),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _record(self, call: Call, tally: _Tally, t0: float) -> None:
        """The request's metrics, however it ended (a client that left counts as 499, a call cut by shutdown as a
        ``ServerShutdown`` error); an answer from other than the first choice counts as a fallback."""
        gw = self.gw
        metrics = gw.metrics
        label, provider, stream_label = tally.label, tally.provider, tally.stream_label
        metrics.in_flight.inc((stream_label,), -1.0)
        elapsed = time.perf_counter() - t0
        status = 499 if call.reason == "disconnect" else tally.status
        gw.observe_attempts(tally.attempts)
        gw.observe_usage(provider, tally.usage)
        metrics.requests.inc((label, provider, stream_label, str(status)))
        metrics.duration.observe((label, provider, stream_label), elapsed)
        if call.reason == "shutdown":
            metrics.errors.inc((label, provider, "ServerShutdown"))
        elif tally.error is not None:
            metrics.errors.inc((label, provider, type(tally.error).__name__))
        elif status == 200 and provider not in ("none", "unknown"):
            first = gw.first_choice(tally.routed)
            if first is not None and first != provider:
                metrics.fallbacks.inc((label, provider))

    async def _stream(
        self,
        call: Call,
        send: Send,
        stream: AsyncStream[ChatCompletionChunk],
        parsed: Parsed,
        provider_name: str,
        label: str,
        t0: float,
        admission: Admission | None,
    ) -> tuple[BaseException | None, Any]:
        """Send the chunks; returns the error that ended the stream early (None: it completed) and the usage the
        stream reported (None: none came)."""
        gw, dialect = self.gw, self.dialect
        encoder = dialect.encoder(parsed)
        out = _EventStream(
            send,
            [
                *_SSE_HEADERS,
                (b"x-polychat-provider", header_value(provider_name)),
                gw.attempts_header(stream.attempts, provider_name),
            ],
        )
        error: BaseException | None = None
        usage: Any = None
        try:
            # The response starts with the first chunk (already in hand when create() returns): its headers may
            # depend on it.
            async for chunk in stream:
                if admission is not None:
                    admission.count(chunk)
                if chunk.usage is not None:
                    usage = chunk.usage
                    if admission is not None:  # the key's settlement; its own usage request is not the client's
                        seen = admission.observe(chunk)
                        if seen is None:
                            continue
                        chunk = seen
                if not out.started:
                    await out.start(dialect.headers(parsed, chunk))
                    gw.metrics.ttft.observe((label, provider_name), time.perf_counter() - t0)
                data = encoder.chunk(chunk)
                if data:
                    await out.write(data)
            await out.end(encoder.end())
        except asyncio.CancelledError:
            if call.reason == "shutdown":
                await out.end(encoder.fail(_shutdown_error()))
            raise
        except Exception as e:
            error = e
            self._log_failure(e, 200)
            await out.end(encoder.fail(from_exception(e, gw.scrub)))
        finally:
            await stream.aclose()
        return error, usage

    def _log_failure(self, e: BaseException, status: int) -> None:
        # Provider failures are already logged (as warnings) by the failover engine; a client's mistake is not the
        # operator's problem. Only what the gateway did not expect is an error.
        scrub = self.gw.scrub.logs
        if isinstance(e, InvalidRequestError):
            log.debug("polychat: invalid request (%d): %s", status, scrub(str(e)))
        elif isinstance(e, PolychatError):
            log.info("polychat: request failed (%d): %s: %s", status, type(e).__name__, scrub(str(e)))
        else:
            log.error("polychat: unexpected error serving %s: %s", self.dialect.path, scrub(repr(e)))
            log.debug("traceback", exc_info=e)


class _EventStream:
    """A streamed response: its status and headers go out once, before the first body piece (or with the last)."""

    def __init__(self, send: Send, headers: Headers) -> None:
        self.send = send
        self.headers = headers
        self.started = False

    async def start(self, more: Sequence[tuple[bytes, bytes]] = ()) -> None:
        """Send the status and the headers (with ``more``), unless sent already."""
        if self.started:
            return
        self.started = True
        await self.send({"type": "http.response.start", "status": 200, "headers": [*self.headers, *more]})

    async def write(self, data: bytes) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, data: bytes) -> None:
        """The last piece (the stream's end, or an error frame); starts the response if nothing did yet."""
        await self.start()
        await self.send({"type": "http.response.body", "body": data, "more_body": False})


@dataclass(slots=True)
class _Tally:
    """What the metrics and the key's settlement need to know of one call, filled in as it goes."""

    label: str  # the model, as a metric label (``other`` for models not served here)
    stream_label: str
    routed: Provider | None = None  # the provider (or chain) the model routed to
    status: int = 200
    provider: str = "none"  # the provider that answered (or failed last)
    error: BaseException | None = None
    attempts: list[Attempt] = field(default_factory=list)
    usage: Any = None
    served: bool = True  # False: it failed before any answer (the key gets its reservation back)


def _is_unknown_model(e: BaseException) -> bool:
    """A 404 about the model (from a provider, or from every attempt of a chain), not some other 404."""

    def about_model(err: BaseException | None) -> bool:
        return getattr(err, "param", None) == "model" or getattr(err, "code", None) == "model_not_found"

    if about_model(e):
        return True
    errors = [a.error for a in getattr(e, "attempts", None) or ()]
    return bool(errors) and all(about_model(err) for err in errors)


async def _watch_disconnect(receive: Receive, call: Call) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            call.stop("disconnect")
            return
