"""OpenAI-shaped response types, plus ``.provider``: the name of the provider that produced the object.

Built on ``msgspec.Struct`` rather than pydantic: JSON decodes straight from bytes into these classes (no dict in
between, several times faster per stream chunk), ``import`` costs a fraction of pydantic's, and attribute access
is the same as the ``openai`` package's (``chunk.choices[0].delta.content``). ``.model_dump()``,
``.model_dump_json()`` and ``.to_dict()`` give the OpenAI wire shape; ``.provider`` is kept out of dumps so a
dump is exactly what OpenAI would have sent.

Fields that a server sends and these classes do not list (vendor extensions) are ignored when decoding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import msgspec

if TYPE_CHECKING:
    from .errors import Attempt

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "ChatCompletionMessageToolCall",
    "Choice",
    "ChoiceDelta",
    "ChoiceDeltaToolCall",
    "ChoiceDeltaToolCallFunction",
    "CompletionUsage",
    "Function",
    "Model",
    "ModelList",
    "StreamChoice",
]


class _Base(msgspec.Struct, dict=True, kw_only=True):
    # Not annotated, so msgspec does not make it a field: set per instance (via the struct's __dict__),
    # it never reaches dumps.
    provider = cast("str | None", None)
    #: The provider's own wire object when it speaks the protocol the request came in (see
    #: :class:`polychat._request.NativeRequest`): an answer body or one stream event; ``{}`` on the further chunks
    #: made from one event. Never part of dumps.
    native = cast("dict[str, Any] | None", None)

    def model_dump(self, *, exclude_none: bool = False, **_: Any) -> dict[str, Any]:
        """The object as plain Python data, with OpenAI's field names."""
        data: dict[str, Any] = msgspec.to_builtins(self)
        return _drop_none(data) if exclude_none else data

    def model_dump_json(self, *, exclude_none: bool = False, indent: int | None = None, **_: Any) -> str:
        if exclude_none or indent:
            import json

            return json.dumps(self.model_dump(exclude_none=exclude_none), indent=indent, ensure_ascii=False)
        return msgspec.json.encode(self).decode()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def to_json(self) -> str:
        return self.model_dump_json()


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


class CompletionTokensDetails(_Base):
    reasoning_tokens: int | None = None
    audio_tokens: int | None = None
    accepted_prediction_tokens: int | None = None
    rejected_prediction_tokens: int | None = None


class PromptTokensDetails(_Base):
    cached_tokens: int | None = None
    audio_tokens: int | None = None


class CompletionUsage(_Base):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    completion_tokens_details: CompletionTokensDetails | None = None
    prompt_tokens_details: PromptTokensDetails | None = None


class Function(_Base):
    name: str = ""
    arguments: str = ""


class ChatCompletionMessageToolCall(_Base):
    id: str = ""
    type: str = "function"
    function: Function = msgspec.field(default_factory=Function)


class ChatCompletionMessage(_Base):
    role: str = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ChatCompletionMessageToolCall] | None = None


class TopLogprob(_Base):
    token: str = ""
    logprob: float = 0.0
    bytes: list[int] | None = None


class TokenLogprob(_Base):
    token: str = ""
    logprob: float = 0.0
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = msgspec.field(default_factory=list)


class ChoiceLogprobs(_Base):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class Choice(_Base):
    index: int = 0
    message: ChatCompletionMessage = msgspec.field(default_factory=ChatCompletionMessage)
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(_Base):
    # Set by the client on every answer (kept out of dumps like ``provider``): each provider attempt of the call,
    # the failed ones and hedges that lost included, ending with the one that answered.
    attempts = cast("list[Attempt]", ())

    id: str = ""
    object: str = "chat.completion"
    created: int = 0
    model: str = ""
    choices: list[Choice] = msgspec.field(default_factory=list)
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None

    @property
    def content(self) -> str:
        """Text of the first choice ('' when there is none): a shortcut, not part of OpenAI's shape."""
        if not self.choices:
            return ""
        return self.choices[0].message.content or ""


class ChoiceDeltaToolCallFunction(_Base):
    name: str | None = None
    arguments: str | None = None


class ChoiceDeltaToolCall(_Base):
    index: int = 0
    id: str | None = None
    type: str | None = None
    function: ChoiceDeltaToolCallFunction | None = None


class ChoiceDelta(_Base):
    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ChoiceDeltaToolCall] | None = None


class StreamChoice(_Base):
    index: int = 0
    delta: ChoiceDelta = msgspec.field(default_factory=ChoiceDelta)
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(_Base):
    id: str = ""
    object: str = "chat.completion.chunk"
    created: int = 0
    model: str = ""
    choices: list[StreamChoice] = msgspec.field(default_factory=list)
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None
    # Like ``provider``, not a field (never in dumps): after a stream was resumed on another provider (``resume=True``),
    # the name of the provider that failed mid-answer; None on chunks of an uninterrupted answer.
    resumed_from = cast("str | None", None)


class Model(_Base):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = ""


class ModelList(_Base):
    object: str = "list"
    data: list[Model] = msgspec.field(default_factory=list)

    def __iter__(self) -> Any:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)
