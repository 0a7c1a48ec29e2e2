"""``POST /v1/responses``: OpenAI's Responses API on the gateway, stateless, for every provider (a
:class:`Dialect` of :mod:`._endpoint`; the translation itself is :mod:`polychat.protocols.responses`).

Errors have OpenAI's shape, as on ``/v1/chat/completions``; after a stream started, a failure is an ``error`` event
followed by ``response.failed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._json import dumps, loads_or_text
from ..protocols import responses as rp
from ._chat import translated
from ._endpoint import Endpoint, Headers, Parsed
from ._errors import HTTPError

if TYPE_CHECKING:
    from ..types import ChatCompletion, ChatCompletionChunk
    from ._gateway import Gateway


class _Stream:
    """The Responses events of one answer, as server-sent events."""

    def __init__(self, model: str, echo: dict[str, Any]) -> None:
        self.events = rp.ResponseStream(model, echo)

    def chunk(self, chunk: ChatCompletionChunk) -> bytes:
        return rp.sse(self.events.chunk(chunk))

    def end(self) -> bytes:
        return rp.sse(self.events.end())

    def fail(self, err: HTTPError) -> bytes:
        data = loads_or_text(err.body)
        error = data.get("error") if isinstance(data, dict) else None
        error = error if isinstance(error, dict) else {}
        message, code = error.get("message"), error.get("code")
        return rp.sse(
            self.events.failed(
                err.status, message if isinstance(message, str) else str(data), code if isinstance(code, str) else None
            )
        )


class OpenAIResponses:
    path = "/v1/responses"
    example = '{"model": "...", "input": "Hello"}'

    def parse(self, data: dict[str, Any], headers: Headers) -> Parsed | HTTPError:
        return translated(data, rp.to_chat)

    def error(self, err: HTTPError) -> HTTPError:
        return err

    def completion(self, result: ChatCompletion, parsed: Parsed) -> bytes:
        return dumps(rp.to_response(result, parsed.model, parsed.context.echo))

    def encoder(self, parsed: Parsed) -> _Stream:
        return _Stream(parsed.model, parsed.context.echo)

    def headers(self, parsed: Parsed, first: ChatCompletion | ChatCompletionChunk | None) -> Headers:
        return []


def ResponsesEndpoint(gateway: Gateway) -> Endpoint:
    """The ASGI app behind ``/v1/responses``."""
    return Endpoint(gateway, OpenAIResponses())
