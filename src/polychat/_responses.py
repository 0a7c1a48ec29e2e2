"""``client.responses.create(...)``: OpenAI's Responses API in the library, over any provider, without the gateway.

The request is translated by :mod:`polychat.protocols.responses` (the gateway's ``/v1/responses`` uses the same
functions) and runs as a chat completion — with the client's routing, failover and resume; the answer comes back as
a :class:`Response`, or with ``stream=True`` as a stream of :class:`ResponseStreamEvent`, with the openai package's
attribute names (``response.output_text``, ``response.output[0].content[0].text``, ``event.type``,
``event.delta``). Stateless, as on the gateway: ``store=True`` and ``previous_response_id`` are refused.

polychat's own call options (``provider=``, ``timeout=``, ``first_token_timeout=``, ``resume=``...) are accepted
beside the Responses parameters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from ._request import CALL_OPTIONS
from ._streams import AsyncStream, Stream
from .protocols import responses as rp
from .types import _Base

if TYPE_CHECKING:
    from .client import AsyncClient, Client
    from .types import ChatCompletion, ChatCompletionChunk

__all__ = ["AsyncResponses", "Response", "ResponseOutputItem", "ResponseStreamEvent", "Responses"]

_OPTIONS = CALL_OPTIONS - {"native_request", "extra_body", "extra_headers", "extra_query"}


class ResponseOutputContent(_Base):
    type: str = "output_text"
    text: str = ""
    annotations: list[Any] = msgspec.field(default_factory=list)
    logprobs: list[Any] = msgspec.field(default_factory=list)


class ResponseOutputItem(_Base):
    """A ``message`` (``role``, ``content``) or a ``function_call`` (``call_id``, ``name``, ``arguments``)."""

    type: str = "message"
    id: str = ""
    status: str | None = None
    role: str | None = None
    content: list[ResponseOutputContent] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None


class InputTokensDetails(_Base):
    cached_tokens: int = 0


class OutputTokensDetails(_Base):
    reasoning_tokens: int = 0


class ResponseUsage(_Base):
    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = msgspec.field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = msgspec.field(default_factory=OutputTokensDetails)
    total_tokens: int = 0


class Response(_Base):
    id: str = ""
    object: str = "response"
    created_at: int = 0
    status: str = "completed"
    background: bool = False
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    model: str = ""
    output: list[ResponseOutputItem] = msgspec.field(default_factory=list)
    store: bool = False
    instructions: Any = None
    max_output_tokens: int | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    tool_choice: Any = "auto"
    tools: list[Any] = msgspec.field(default_factory=list)
    text: dict[str, Any] = msgspec.field(default_factory=dict)
    truncation: str = "disabled"
    user: str | None = None
    reasoning: dict[str, Any] | None = None
    usage: ResponseUsage | None = None

    @property
    def output_text(self) -> str:
        """The text of every ``output_text`` part, joined (the openai package's shortcut)."""
        return "".join(
            part.text
            for item in self.output
            if item.type == "message"
            for part in item.content or ()
            if part.type == "output_text"
        )


class ResponseStreamEvent(_Base):
    """One stream event; the fields its ``type`` carries are set, the others are None."""

    type: str = ""
    sequence_number: int = 0
    response: Response | None = None
    output_index: int | None = None
    item: ResponseOutputItem | None = None
    item_id: str | None = None
    content_index: int | None = None
    part: ResponseOutputContent | None = None
    delta: str | None = None
    text: str | None = None
    arguments: str | None = None
    logprobs: list[Any] | None = None
    code: str | None = None
    message: str | None = None
    param: str | None = None


def _call(model: Any, input: Any, stream: Any, kwargs: dict[str, Any]) -> tuple[rp.ResponsesCall, dict[str, Any]]:
    """The translated call and polychat's own options (kept apart from the Responses parameters)."""
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in _OPTIONS}
    body = {"model": model, "input": input, **{k: v for k, v in kwargs.items() if v is not None}}
    if stream:
        body["stream"] = stream
    call = rp.to_chat(body)
    return call, {**call.kwargs, **options}


def _response(completion: ChatCompletion, call: rp.ResponsesCall) -> Response:
    response = msgspec.convert(rp.to_response(completion, call.model, call.echo), Response)
    response.provider = completion.provider
    return response


def _events(events: list[rp.Event], provider: str | None) -> list[ResponseStreamEvent]:
    out = msgspec.convert(events, list[ResponseStreamEvent])
    for event in out:
        event.provider = provider
    return out


class Responses:
    """``client.responses``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self, *, model: str, input: Any, stream: bool = False, **kwargs: Any
    ) -> Response | Stream[ResponseStreamEvent]:
        """A Responses API call (``instructions``, ``tools``, ``tool_choice``, ``text``, ``max_output_tokens``,
        ``temperature``, ...); with ``stream=True`` a :class:`~polychat.client.Stream` of events."""

        call, options = _call(model, input, stream, kwargs)
        result = self._client.chat.completions.create(call.model, call.messages, call.stream, **options)
        if not isinstance(result, Stream):
            return _response(result, call)
        return Stream(_sync_events(result, call))


def _sync_events(chunks: Stream[ChatCompletionChunk], call: rp.ResponsesCall) -> Iterator[ResponseStreamEvent]:
    events = rp.ResponseStream(call.model, call.echo)
    with chunks:
        for chunk in chunks:
            for event in _events(events.chunk(chunk), chunks.provider):
                yield event
    for event in _events(events.end(), chunks.provider):
        yield event


class AsyncResponses:
    """``aclient.responses``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self, *, model: str, input: Any, stream: bool = False, **kwargs: Any
    ) -> Response | AsyncStream[ResponseStreamEvent]:
        """Async :meth:`Responses.create`: ``stream = await create(..., stream=True)``, then ``async for``."""

        call, options = _call(model, input, stream, kwargs)
        result = await self._client.chat.completions.create(call.model, call.messages, call.stream, **options)
        if not isinstance(result, AsyncStream):
            return _response(result, call)
        return AsyncStream(_async_events(result, call))


async def _async_events(
    chunks: AsyncStream[ChatCompletionChunk], call: rp.ResponsesCall
) -> AsyncIterator[ResponseStreamEvent]:
    events = rp.ResponseStream(call.model, call.echo)
    async with chunks:
        async for chunk in chunks:
            for event in _events(events.chunk(chunk), chunks.provider):
                yield event
    for event in _events(events.end(), chunks.provider):
        yield event
