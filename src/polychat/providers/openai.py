"""OpenaiChat: the OpenAI Chat Completions protocol — the official API and every OpenAI-compatible server.

Requests go out as the caller wrote them (polychat validated them already); answers decode straight from bytes
into :mod:`polychat.types`. A stream must end with ``data: [DONE]`` or a ``finish_reason``; one that just stops is
reported as cut short, never passed off as a complete answer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from .. import _constants as C
from .._http import WireRequest
from .._json import dumps, loads_or_text
from .._sse import SSEDecoder
from ..errors import APIConnectionError, APIError, error_frame
from ..errors import MissingAPIKeyError as MissingAPIKeyError  # its home before errors.py; kept for imports
from ..types import ChatCompletion, ChatCompletionChunk, Model, ModelList
from .base import Capabilities
from .http import HTTPProvider, HTTPProviderOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .._request import ChatRequest

_chunk_decoder = msgspec.json.Decoder(ChatCompletionChunk, strict=False)
_completion_decoder = msgspec.json.Decoder(ChatCompletion, strict=False)
_models_decoder = msgspec.json.Decoder(ModelList, strict=False)

_USER_AGENT = "polychat/0.1"


class OpenAIStreamParser:
    """SSE bytes → :class:`ChatCompletionChunk` objects, with error frames and truncation detected."""

    __slots__ = ("_decoder", "_done", "_error", "_finished", "_provider")

    def __init__(self, provider: str) -> None:
        self._decoder = SSEDecoder()
        self._provider = provider
        self._done = False
        self._finished = False
        # An error found after good chunks in the same read: those chunks go out first, the error next time.
        self._error: APIError | None = None

    def feed(self, data: bytes) -> list[ChatCompletionChunk]:
        if self._error is not None:
            raise self._error
        events = self._decoder.feed(data)
        return self._convert(events) if events else []

    def finish(self) -> Iterator[ChatCompletionChunk]:
        if self._error is not None:
            raise self._error
        yield from self._convert(self._decoder.flush())
        if self._error is not None:
            raise self._error
        if not self._done and not self._finished:
            raise APIConnectionError(
                "The stream ended without [DONE] or a finish_reason: the answer was cut short",
                provider=self._provider,
            )

    def _convert(self, events: list[Any]) -> list[ChatCompletionChunk]:
        out: list[ChatCompletionChunk] = []
        try:
            self._convert_into(events, out)
        except APIError as e:
            if not out:
                raise
            self._error = e
        return out

    def _convert_into(self, events: list[Any], out: list[ChatCompletionChunk]) -> None:
        for ev in events:
            data = ev.data
            if self._done:
                continue
            if data == "[DONE]":
                self._done = True
                continue
            if not data.strip():
                continue
            if ev.event == "error" or '"error"' in data:
                payload = loads_or_text(data.encode())
                if ev.event == "error" or (isinstance(payload, dict) and payload.get("error") is not None):
                    raise error_frame(payload if isinstance(payload, dict) else {"error": payload}, self._provider)
            try:
                chunk = _chunk_decoder.decode(data)
            except (msgspec.DecodeError, RecursionError) as e:
                raise APIConnectionError(
                    f"Malformed stream data from the provider: {e}: {data[:200]!r}", provider=self._provider
                ) from e
            chunk.provider = self._provider
            for choice in chunk.choices:
                if choice.finish_reason is not None:
                    self._finished = True
            out.append(chunk)


class OpenaiChat(HTTPProvider):
    """The OpenAI Chat Completions API, or any server that speaks it.

    ``api_key`` defaults to ``OPENAI_API_KEY``, ``base_url`` to ``OPENAI_BASE_URL`` and then the official
    endpoint. A key is required only for the official endpoint; local servers usually need none.
    """

    capabilities = Capabilities(streaming=True, tools=True, vision=True, json_mode=True, system_role=True)
    api_key_envs = ("OPENAI_API_KEY",)
    base_url_env = "OPENAI_BASE_URL"
    default_base_url = C.OPENAI_BASE_URL

    def __init__(
        self,
        *,
        organization: str | None = None,
        project: str | None = None,
        **options: Unpack[HTTPProviderOptions],
    ) -> None:
        super().__init__(**options)
        own: dict[str, str] = {"accept": "application/json", "user-agent": _USER_AGENT}
        if organization or os.environ.get("OPENAI_ORG_ID"):
            own["openai-organization"] = organization or os.environ["OPENAI_ORG_ID"]
        if project or os.environ.get("OPENAI_PROJECT_ID"):
            own["openai-project"] = project or os.environ["OPENAI_PROJECT_ID"]
        # The caller's headers (already in _base_headers) win over ours.
        self._base_headers = {**own, **self._base_headers}

    # -- protocol ------------------------------------------------------------------------------------------------

    def chat_request(self, request: ChatRequest, *, stream: bool) -> WireRequest:
        body: dict[str, Any] = {"model": self.resolve_model(request.model), "messages": request.messages}
        body.update(request.params)
        body.update(request.extra_body)
        if stream:
            body["stream"] = True
        headers = self._base_headers
        if stream or request.extra_headers:
            headers = {**headers, **request.extra_headers}
            if stream:
                headers["accept"] = "text/event-stream"
        return WireRequest(
            "POST",
            f"{self.base_url}/chat/completions",
            headers,
            dumps(body),
            request.extra_query or None,
        )

    def parse_completion(self, body: bytes, request: ChatRequest) -> ChatCompletion:
        if b'"error"' in body[:200]:
            payload = loads_or_text(body)
            if isinstance(payload, dict) and payload.get("error") is not None and not payload.get("choices"):
                raise error_frame(payload, self.name)
        try:
            return _completion_decoder.decode(body)
        except (msgspec.DecodeError, RecursionError) as e:
            raise APIConnectionError(
                f"Malformed response from the provider: {e}: {body[:200]!r}", provider=self.name
            ) from e

    def stream_parser(self, request: ChatRequest) -> OpenAIStreamParser:
        return OpenAIStreamParser(self.name)

    def models_request(self) -> WireRequest:
        headers = {k: v for k, v in self._base_headers.items() if k != "content-type"}
        return WireRequest("GET", f"{self.base_url}/models", headers)

    def parse_models(self, body: bytes) -> list[Model]:
        try:
            return _models_decoder.decode(body).data
        except (msgspec.DecodeError, RecursionError):
            data = loads_or_text(body)
            raise APIConnectionError(f"Malformed models list: {str(data)[:200]}", provider=self.name) from None
