"""``POST /v1/chat/completions``: OpenAI's Chat Completions, the gateway's native protocol (a :class:`Dialect` of
:mod:`._endpoint`, which does the checks, the call and the streaming).

1. The body is split: ``model``, ``messages`` and ``stream``; OpenAI request parameters; fields that would steer
   polychat itself (``provider``, ``proxy``, ``base_url``, ``api_key``, ``extra_headers``, failover switches...)
   are refused with 400 — a client chooses a model, never an upstream URL, key or policy; any other field is a
   vendor parameter and travels in the upstream JSON body, as the ``openai`` client's ``extra_body`` does (it
   cannot change where the request goes).
2. polychat validates exactly as the library does (:func:`polychat._request.build_request`, via ``create``).
3. Non-stream: the completion as JSON. Stream: ``data:`` frames as OpenAI sends them, ``data: [DONE]`` at the end.
   A failure before the first chunk is an HTTP error with OpenAI's error body; after it, an error frame and the
   end of the body (no ``[DONE]``: the answer is incomplete).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from .._request import CALL_OPTIONS, PARAMS
from ..errors import InvalidRequestError
from . import _sse
from ._endpoint import Endpoint, Headers, Parsed, send_error
from ._errors import HTTPError, Scrubber, from_exception, make_error

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..protocols._common import Call
    from ..types import ChatCompletion, ChatCompletionChunk
    from ._gateway import Gateway

__all__ = ["REFUSED", "ChatEndpoint", "OpenAIChat", "send_error"]

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

_encode = msgspec.json.encode
_MISSING: Any = object()


def refused_field(key: str) -> HTTPError:
    """The 400 for a body field that would choose the upstream, its key or proxy, or the failover policy."""
    return make_error(
        400,
        f"The parameter '{key}' is not accepted by this gateway: the upstream providers, their URLs, "
        "keys and proxies, and the failover policy are set by the server's configuration. Choose a "
        "provider with 'model' (a route alias, a model name, or 'provider:model').",
        param=key,
        code="unsupported_parameter",
    )


def translated(
    data: dict[str, Any], to_chat: Callable[[dict[str, Any]], Call], header_error: HTTPError | None = None
) -> Parsed | HTTPError:
    """A translated protocol's body (Messages, Responses) as polychat's call, or the 400 for it: a field only the
    server's config may set first, then ``header_error`` (a bad header of the protocol's own), then whatever
    ``to_chat`` finds wrong with the body. The :class:`Call` becomes the request's context."""
    for key in data:
        if key in REFUSED:
            return refused_field(key)
    if header_error is not None:
        return header_error
    try:
        call = to_chat(data)
    except InvalidRequestError as e:
        return from_exception(e, Scrubber())
    return Parsed(call.model, call.messages, call.stream, call.kwargs, context=call)


class _OpenAIStream:
    __slots__ = ()

    def chunk(self, chunk: ChatCompletionChunk) -> bytes:
        return _sse.frame(chunk)

    def end(self) -> bytes:
        return _sse.DONE

    def fail(self, err: HTTPError) -> bytes:
        return b"data: " + err.body + b"\n\n"


_STREAM = _OpenAIStream()


class OpenAIChat:
    """The Chat Completions dialect: the request is already polychat's; errors and chunks go out as they are."""

    path = "/v1/chat/completions"
    example = '{"model": "...", "messages": [{"role": "user", "content": "Hello"}]}'

    def parse(self, data: dict[str, Any], headers: Headers) -> Parsed | HTTPError:
        model = data.pop("model", _MISSING)
        if model is _MISSING:
            return make_error(
                400, "You must provide a model parameter.", param="model", code="missing_required_parameter"
            )
        messages = data.pop("messages", _MISSING)
        if messages is _MISSING:
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
                return refused_field(key)
            else:
                if extra is None:
                    extra = {}
                extra[key] = value
        if extra:
            kwargs["extra_body"] = extra
        return Parsed(model, messages, stream, kwargs)

    def error(self, err: HTTPError) -> HTTPError:
        return err

    def completion(self, result: ChatCompletion, parsed: Parsed) -> bytes:
        return _encode(result)

    def encoder(self, parsed: Parsed) -> _OpenAIStream:
        return _STREAM

    def headers(self, parsed: Parsed, first: ChatCompletion | ChatCompletionChunk | None) -> Headers:
        return []


def ChatEndpoint(gateway: Gateway) -> Endpoint:
    """The ASGI app behind ``/v1/chat/completions``."""
    return Endpoint(gateway, OpenAIChat())
