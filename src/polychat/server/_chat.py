"""``POST /v1/chat/completions``: the gateway's hot path, a plain ASGI endpoint (no Request/Response objects).

1. Checks: Origin, API key (before the body is read), draining, body size (``Content-Length`` first, then as it
   arrives).
2. The body is parsed with msgspec and split: ``model``, ``messages`` and ``stream``; OpenAI request parameters;
   fields that would steer polychat itself (``provider``, ``proxy``, ``base_url``, ``api_key``, ``extra_headers``,
   failover switches...) are refused with 400 — a client chooses a model, never an upstream URL, key or policy;
   any other field is a vendor parameter and travels in the upstream JSON body, as the ``openai`` client's
   ``extra_body`` does (it cannot change where the request goes).
3. polychat validates exactly as the library does (:func:`polychat._request.build_request`, via ``create``), the
   model picks the route, and the call runs through :class:`polychat.AsyncClient` with its failover.
4. Non-stream: the completion as JSON. Stream: ``data:`` frames as OpenAI sends them, ``data: [DONE]`` at the end.
   A failure before the first chunk is an HTTP error with OpenAI's error body; after it, an error frame and the
   end of the body (no ``[DONE]``: the answer is incomplete). Either way ``x-polychat-provider`` names the
   provider.

A disconnecting client cancels the call: a watcher task waits for ``http.disconnect`` and cancels the serving
task, which closes the polychat stream (and so the upstream connection, or the embedded model's generation).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec

from .._request import CALL_OPTIONS, PARAMS
from ..errors import InvalidRequestError, PolychatError
from . import _sse
from ._errors import HTTPError, from_exception, make_error, stream_error_frame
from ._gateway import Call, refusal_error
from ._limits import Admission, Refusal

if TYPE_CHECKING:
    from ..errors import Attempt
    from ._gateway import Gateway

log = logging.getLogger("polychat.server")

Scope = dict[str, Any]
Receive = Any
Send = Any

#: Body fields that would let a client steer polychat (where to send, with which key, through which proxy, with
#: which failover policy). Refused: only the server's config decides these.
REFUSED = CALL_OPTIONS | {
    "api_base",
    "api_key",
    "base_url",
    "default_headers",
    "default_query",
    "headers",
    "http_client",
    "max_retries",
    "organization",
    "project",
    "proxies",
    "url",
}

_JSON = b"application/json"
_COMMON = [(b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"x-content-type-options", b"nosniff"),
]
_decode = msgspec.json.decode
_encode = msgspec.json.encode
_MISSING: Any = object()


def _header_value(name: str) -> bytes:
    return name.encode("latin-1", "replace")


async def send_error(send: Send, err: HTTPError, *, close: bool = False) -> None:
    headers = [(b"content-type", _JSON), (b"content-length", str(len(err.body)).encode()), *_COMMON, *err.headers]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": err.body})


def _uncancel(task: asyncio.Task[Any] | None) -> None:
    uncancel = getattr(task, "uncancel", None)  # Python 3.11+
    if uncancel is not None:
        uncancel()


class ChatEndpoint:
    """The ASGI app behind ``/v1/chat/completions``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        gw = self.gw
        if scope["method"] != "POST":
            refused = make_error(405, "Use POST for /v1/chat/completions.", code="method_not_allowed")
            refused.headers.append((b"allow", b"POST"))
            return await send_error(send, refused)
        host = origin = authorization = length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                length = value
            elif name == b"host":
                host = value
            elif name == b"origin":
                origin = value
        err = gw.check_api(host, origin, authorization)
        if err is not None:
            return await send_error(send, err)
        if gw.draining:
            gw.metrics.rejected.inc(("draining",))
            return await send_error(
                send, make_error(503, "The server is shutting down.", code="server_shutdown"), close=True
            )
        body = await self._read_body(receive, send, length)
        if body is None:
            return
        parsed = self._parse(body)
        if isinstance(parsed, HTTPError):
            return await send_error(send, parsed)
        model, messages, stream, kwargs = parsed
        admission = await gw.admit(authorization, model, messages, kwargs)
        if isinstance(admission, Refusal):
            return await send_error(send, refusal_error(admission))

        task = asyncio.current_task()
        call = Call(task)
        watcher = asyncio.ensure_future(_watch_disconnect(receive, call))
        gw.inflight.add(call)
        try:
            await self._answer(call, send, model, messages, stream, kwargs, t0, admission)
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
        await send_error(send, err, close=True)

    def _parse(self, body: bytes) -> tuple[Any, Any, Any, dict[str, Any]] | HTTPError:
        metrics = self.gw.metrics
        try:
            data = _decode(body)
        except msgspec.DecodeError as e:
            metrics.rejected.inc(("bad_json",))
            return make_error(
                400,
                f"We could not parse the JSON body of your request ({e}). The body must be a JSON object such as "
                '{"model": "...", "messages": [{"role": "user", "content": "Hello"}]}, sent with '
                "Content-Type: application/json.",
                code="invalid_json",
            )
        except RecursionError:  # msgspec gives up on deep nesting with Python's own error
            metrics.rejected.inc(("bad_json",))
            return make_error(
                400, "The JSON body of your request is nested too deeply to be a chat request.", code="invalid_json"
            )
        if not isinstance(data, dict):
            metrics.rejected.inc(("bad_json",))
            return make_error(
                400, f"The request body must be a JSON object, not {type(data).__name__}.", code="invalid_json"
            )
        model = data.pop("model", _MISSING)
        if model is _MISSING:
            metrics.rejected.inc(("invalid",))
            return make_error(
                400, "You must provide a model parameter.", param="model", code="missing_required_parameter"
            )
        messages = data.pop("messages", _MISSING)
        if messages is _MISSING:
            metrics.rejected.inc(("invalid",))
            return make_error(
                400, "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
            )
        stream = data.pop("stream", False)
        if stream is None:
            stream = False
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] | None = None
        for key, value in data.items():
            if key in PARAMS:
                kwargs[key] = value
            elif key in REFUSED:
                metrics.rejected.inc(("invalid",))
                return make_error(
                    400,
                    f"The parameter '{key}' is not accepted by this gateway: the upstream providers, their URLs, "
                    "keys and proxies, and the failover policy are set by the server's configuration. Choose a "
                    "provider with 'model' (a route alias, a model name, or 'provider:model').",
                    param=key,
                    code="unsupported_parameter",
                )
            else:
                if extra is None:
                    extra = {}
                extra[key] = value
        if extra:
            kwargs["extra_body"] = extra
        return model, messages, stream, kwargs

    # -- answer ---------------------------------------------------------------------------------------------------

    async def _answer(
        self,
        call: Call,
        send: Send,
        model: Any,
        messages: Any,
        stream: Any,
        kwargs: dict[str, Any],
        t0: float,
        admission: Admission | None,
    ) -> None:
        gw = self.gw
        if admission is not None and stream is True:
            admission.prepare_stream(kwargs)
        served = True
        usage: Any = None
        metrics = gw.metrics
        label = gw.route_label(model)
        stream_label = "true" if stream is True else "false"
        in_flight = (stream_label,)
        metrics.in_flight.inc(in_flight)
        status = 200
        provider_name = "none"
        error: BaseException | None = None
        provider = None
        attempts: list[Attempt] = []
        try:
            try:
                provider, routed = gw.route(model)
                result = await gw.client.chat.completions.create(routed, messages, stream, provider=provider, **kwargs)
            except asyncio.CancelledError:
                if call.reason == "shutdown":
                    status = 503
                    await send_error(
                        send, make_error(503, "The server is shutting down.", code="server_shutdown"), close=True
                    )
                elif call.reason == "disconnect":
                    status = 499
                raise
            except Exception as e:
                error = e
                served = False
                err = from_exception(e, gw.scrub)
                if err.status == 404 and _is_unknown_model(e):
                    err = gw.unknown_model(model, err)
                status = err.status
                failed_by = getattr(e, "provider", None)
                if isinstance(failed_by, str) and failed_by:
                    provider_name = failed_by
                    err.headers.append((b"x-polychat-provider", _header_value(failed_by)))
                attempts = getattr(e, "attempts", None) or []
                if attempts:
                    err.headers.append(gw.attempts_header(attempts))
                self._log_failure(e, status)
                await send_error(send, err)
                return
            if not stream:
                provider_name = result.provider or "unknown"
                attempts = result.attempts
                usage = getattr(result, "usage", None)
                if admission is not None:
                    admission.usage = usage
                body = _encode(result)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-type", _JSON),
                            (b"content-length", str(len(body)).encode()),
                            (b"x-polychat-provider", _header_value(provider_name)),
                            gw.attempts_header(attempts),
                            *_COMMON,
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
            provider_name = result.provider or "unknown"
            attempts = result.attempts  # the stream's own list: complete once the stream has ended
            error, usage = await self._stream(call, send, result, provider_name, label, t0, admission)
        finally:
            if admission is not None:
                admission.finish(served=served)
            metrics.in_flight.inc(in_flight, -1.0)
            elapsed = time.perf_counter() - t0
            if call.reason == "disconnect":
                status = 499
            gw.observe_attempts(attempts)
            gw.observe_usage(provider_name, usage)
            metrics.requests.inc((label, provider_name, stream_label, str(status)))
            metrics.duration.observe((label, provider_name, stream_label), elapsed)
            if call.reason == "shutdown":
                metrics.errors.inc((label, provider_name, "ServerShutdown"))
            elif error is not None:
                metrics.errors.inc((label, provider_name, type(error).__name__))
            elif status == 200 and provider_name not in ("none", "unknown"):
                first = gw.first_choice(provider)
                if first is not None and first != provider_name:
                    metrics.fallbacks.inc((label, provider_name))

    async def _stream(
        self,
        call: Call,
        send: Send,
        stream: Any,
        provider_name: str,
        label: str,
        t0: float,
        admission: Admission | None,
    ) -> tuple[BaseException | None, Any]:
        """Send the chunks; returns the error that ended the stream early (None: it completed) and the usage the
        stream reported (None: none came)."""
        gw = self.gw
        headers = [
            *_SSE_HEADERS,
            (b"x-polychat-provider", _header_value(provider_name)),
            gw.attempts_header(stream.attempts, provider_name),
        ]
        error: BaseException | None = None
        usage: Any = None
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            first = True
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                    if admission is not None:  # the key's settlement; its own usage request is not the client's
                        chunk = admission.observe(chunk)
                        if chunk is None:
                            continue
                await send({"type": "http.response.body", "body": _sse.frame(chunk), "more_body": True})
                if first:
                    first = False
                    gw.metrics.ttft.observe((label, provider_name), time.perf_counter() - t0)
            await send({"type": "http.response.body", "body": _sse.DONE, "more_body": False})
        except asyncio.CancelledError:
            if call.reason == "shutdown":
                await send(
                    {
                        "type": "http.response.body",
                        "body": _SHUTDOWN_FRAME,
                        "more_body": False,
                    }
                )
            raise
        except Exception as e:
            error = e
            self._log_failure(e, 200)
            await send({"type": "http.response.body", "body": stream_error_frame(e, gw.scrub), "more_body": False})
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
            log.error("polychat: unexpected error serving a chat request: %s", scrub(repr(e)))
            log.debug("traceback", exc_info=e)


_SHUTDOWN_FRAME = (
    b"data: "
    + _encode(
        {
            "error": {
                "message": "The server is shutting down; the answer was cut short.",
                "type": "server_error",
                "param": None,
                "code": "server_shutdown",
            }
        }
    )
    + b"\n\n"
)


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
