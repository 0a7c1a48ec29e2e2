"""``POST /v1/messages``: Anthropic's Messages API on the gateway, for every provider (a :class:`Dialect` of
:mod:`._endpoint`; the translation itself is :mod:`polychat.protocols.anthropic_messages`).

Clients authenticate with ``x-api-key`` (or ``Authorization: Bearer``); ``anthropic-version`` is accepted as sent,
and it and ``anthropic-beta`` reach Anthropic providers with the client's body. Errors have Anthropic's shape
(``{"type": "error", "error": {"type", "message"}}``) and, after a stream started, come as ``event: error``.
``x-polychat-drop-unsupported: true`` lets providers that cannot honour part of a request drop it instead of
refusing; ``x-polychat-dropped`` on an answer lists the hints left out for a provider that does not speak
Anthropic's protocol (``cache_control``, earlier turns' ``thinking`` blocks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._json import dumps, loads_or_text
from ..errors import InvalidRequestError
from ..protocols import anthropic_messages as am
from ._chat import translated
from ._endpoint import Endpoint, Headers, Parsed
from ._errors import HTTPError, Scrubber, from_exception

if TYPE_CHECKING:
    from ..types import ChatCompletion, ChatCompletionChunk
    from ._gateway import Gateway

DROP_HEADER = b"x-polychat-drop-unsupported"


def _header(headers: Headers, name: bytes) -> str | None:
    for k, v in headers:
        if k == name:
            return v.decode("latin-1")
    return None


def wants_drop(headers: Headers) -> HTTPError | bool:
    """The client's opt-in to dropping what a provider cannot honour."""
    value = _header(headers, DROP_HEADER)
    if value is None:
        return False
    if value.strip().lower() in ("true", "1", "yes"):
        return True
    if value.strip().lower() in ("false", "0", "no"):
        return False
    return from_exception(
        InvalidRequestError(f"Header x-polychat-drop-unsupported must be true or false, got {value!r}."),
        Scrubber(),
    )


def anthropic_shape(err: HTTPError) -> HTTPError:
    """An error answer re-shaped for Anthropic's clients (the status and headers are kept)."""
    data = loads_or_text(err.body)
    message = data.get("error", {}).get("message") if isinstance(data, dict) else None
    body = dumps(am.error_body(err.status, message if isinstance(message, str) else str(data)))
    return HTTPError(err.status, body, err.headers)


class _Stream(am.MessageStream):
    def fail(self, err: HTTPError) -> bytes:
        return b"event: error\ndata: " + anthropic_shape(err).body + b"\n\n"


class AnthropicMessages:
    path = "/v1/messages"
    example = '{"model": "...", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hello"}]}'

    def parse(self, data: dict[str, Any], headers: Headers) -> Parsed | HTTPError:
        drop = wants_drop(headers)
        forward = {}
        for name in ("anthropic-beta", "anthropic-version"):
            value = _header(headers, name.encode())
            if value is not None:
                forward[name] = value
        parsed = translated(
            data, lambda body: am.to_chat(body, headers=forward), drop if isinstance(drop, HTTPError) else None
        )
        if isinstance(parsed, Parsed) and drop:
            parsed.kwargs["drop_unsupported"] = True
        return parsed

    def error(self, err: HTTPError) -> HTTPError:
        return anthropic_shape(err)

    def completion(self, result: ChatCompletion, parsed: Parsed) -> bytes:
        return dumps(am.to_message(result, parsed.model))

    def encoder(self, parsed: Parsed) -> _Stream:
        return _Stream(parsed.model)

    def headers(self, parsed: Parsed, first: ChatCompletion | ChatCompletionChunk | None) -> Headers:
        call = parsed.context
        # with the client's opt-in, what a provider could not honour was left out too: say so
        dropped = [*call.dropped, *call.lossy] if call.kwargs.get("drop_unsupported") else call.dropped
        if not dropped or (first is not None and first.native is not None):
            return []
        return [(b"x-polychat-dropped", ", ".join(dropped).encode())]


def MessagesEndpoint(gateway: Gateway) -> Endpoint:
    """The ASGI app behind ``/v1/messages``."""
    return Endpoint(gateway, AnthropicMessages())
