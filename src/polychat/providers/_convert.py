"""Pure normalisation helpers shared by the native adapters (Anthropic, Gemini, Ollama) and the registry presets.

Everything here is data in, data out: no I/O, no state beyond one stream parser's buffers. It covers

* parameters a provider cannot honour: :func:`accepted_params` refuses them with :class:`UnsupportedParameterError`
  (raised before anything is sent, naming the parameter and the provider), or drops them — logged — when the call
  says ``drop_unsupported=True``;
* OpenAI message content: text parts, images (``image_url`` with an ``https:`` URL or a ``data:`` URL), tool calls,
  tool results, tool schemas and ``tool_choice``;
* ``response_format`` JSON modes and the documented fallback instruction for services without a native JSON mode;
* OpenAI-shaped chunks and usage, and :class:`FrameParser`, the base of every non-OpenAI stream parser (error found
  after good chunks raised on the next call, truncation detected at the end).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .._json import dumps, loads
from .._sse import ServerSentEvent, SSEDecoder
from ..errors import APIConnectionError, APIError, InvalidRequestError, UnsupportedParameterError
from ..types import (
    ChatCompletionChunk,
    ChoiceDelta,
    ChoiceDeltaToolCall,
    ChoiceDeltaToolCallFunction,
    CompletionTokensDetails,
    CompletionUsage,
    PromptTokensDetails,
    StreamChoice,
)

log = logging.getLogger("polychat")


# -- parameters ------------------------------------------------------------------------------------------------

#: A check for one parameter value: None when the provider can honour it, else why not ("is not supported").
Check = Callable[[Any], "str | None"]


def only(*allowed: Any) -> Check:
    """Accept only these values (e.g. ``n`` = 1, ``parallel_tool_calls`` = True)."""

    def check(value: Any) -> str | None:
        if value in allowed:
            return None
        return f"= {value!r} is not supported (only {', '.join(repr(a) for a in allowed)})"

    return check


def at_most(limit: float, what: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value <= limit else f"= {value!r} is above {limit:g}, the most {what} accepts"

    return check


def format_types(*types: str) -> Check:
    """``response_format`` limited to these ``type`` values."""

    def check(value: Any) -> str | None:
        t = value.get("type") if isinstance(value, Mapping) else None
        return None if t in types else f"with type {t!r} is not supported (only {', '.join(types)})"

    return check


def _store(value: Any) -> str | None:
    return None if value is False else "= True is not supported (the provider does not store completions)"


#: Parameters every adapter accepts without sending anything: they do not change the answer.
NO_OP: dict[str, Check | None] = {
    "user": None,
    "metadata": None,
    "safety_identifier": None,
    "prompt_cache_key": None,
    "store": _store,
    "service_tier": only("auto", "default"),
    "logprobs": only(False),
    "n": only(1),
}


def accepted_params(
    params: Mapping[str, Any], rules: Mapping[str, Check | None], *, provider: str, drop: bool
) -> dict[str, Any]:
    """The parameters a provider can honour; any other is an :class:`UnsupportedParameterError` (or, with
    ``drop``, left out and logged). ``rules`` maps each parameter the provider handles to a value check."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        why: str | None = "is not supported"
        if name in rules:
            check = rules[name]
            why = check(value) if check is not None else None
        if why is None:
            out[name] = value
        elif drop:
            log.info("polychat: %s: dropped parameter %s (%s) as drop_unsupported=True asks", provider, name, why)
        else:
            raise unsupported(name, why, provider)
    return out


def unsupported(param: str, why: str, provider: str) -> UnsupportedParameterError:
    detail = f"Parameter {param} {why} by provider {provider}"
    return UnsupportedParameterError(
        f"{detail}; remove it, or pass drop_unsupported=True to let providers drop parameters they cannot honour.",
        param=param,
        provider=provider,
        detail=detail,
    )


# -- content -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """An image part: ``url`` for a remote image, or ``media_type`` + base64 ``data`` from a data URL."""

    url: str | None = None
    media_type: str | None = None
    data: str | None = None


_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^,;]*)*?),(?P<data>.*)$", re.S)


def parse_data_url(url: str, where: str) -> Image:
    """``data:image/png;base64,...`` → Image(media_type, data); a data URL that is not base64 is refused."""
    m = _DATA_URL.match(url)
    if m is None or ";base64" not in m.group("params"):
        raise InvalidRequestError(
            f"Invalid argument {where}: a data URL must be data:<type>;base64,<data>", param=where
        )
    data = m.group("data").strip()
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(f"Invalid argument {where}: the data URL is not valid base64", param=where) from None
    return Image(media_type=m.group("type") or "application/octet-stream", data=data)


def content_parts(content: Any, where: str, provider: str) -> list[str | Image]:
    """A message's content as text pieces and images (OpenAI ``text`` and ``image_url`` parts)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    out: list[str | Image] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        at = f"{where}.content[{j}]"
        if kind == "text":
            out.append(part["text"])
        elif kind == "image_url":
            spec = part.get("image_url")
            url = spec.get("url") if isinstance(spec, Mapping) else spec
            if not isinstance(url, str) or not url:
                raise InvalidRequestError(f"Invalid argument {at}.image_url: needs a 'url'", param=f"{at}.image_url")
            out.append(parse_data_url(url, f"{at}.image_url.url") if url.startswith("data:") else Image(url=url))
        elif kind == "refusal":
            out.append(str(part.get("refusal") or ""))
        else:
            raise unsupported(f"{at}", f"of type {kind!r} is not supported", provider)
    return out


def text_content(content: Any, where: str, provider: str) -> str:
    """Content that may only be text (system prompts, tool results): the text parts joined."""
    pieces = []
    for piece in content_parts(content, where, provider):
        if isinstance(piece, Image):
            raise unsupported(where, "with an image is not supported here", provider)
        pieces.append(piece)
    return "".join(pieces)


# -- tools -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    description: str | None
    parameters: dict[str, Any] | None


def function_specs(tools: Any, provider: str) -> list[FunctionSpec]:
    """OpenAI ``tools`` (function tools only) as name / description / JSON-schema parameters."""
    out = []
    for i, tool in enumerate(tools or ()):
        if tool.get("type", "function") != "function" or not isinstance(tool.get("function"), Mapping):
            raise unsupported(f"tools[{i}]", f"of type {tool.get('type')!r} is not supported", provider)
        fn = tool["function"]
        if not isinstance(fn.get("name"), str):
            raise InvalidRequestError(f"Invalid argument tools[{i}].function.name: is required", param="tools")
        out.append(FunctionSpec(fn["name"], fn.get("description"), fn.get("parameters")))
    return out


def tool_choice_of(value: Any) -> tuple[str, str | None]:
    """``tool_choice`` as (mode, function name): mode is auto, none, required or function."""
    if value is None:
        return "auto", None
    if isinstance(value, str):
        if value not in ("auto", "none", "required"):
            raise InvalidRequestError(
                "Invalid argument tool_choice: must be 'auto', 'none', 'required' or a function", param="tool_choice"
            )
        return value, None
    fn = value.get("function") if isinstance(value, Mapping) else None
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        raise InvalidRequestError(
            "Invalid argument tool_choice: an object must be {'type': 'function', 'function': {'name': ...}}",
            param="tool_choice",
        )
    return "function", fn["name"]


def parse_arguments(arguments: Any, where: str) -> Any:
    """A tool call's ``arguments`` (a JSON string in OpenAI's shape) as a value; '' is {}."""
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    try:
        return loads(arguments)
    except Exception:
        raise InvalidRequestError(f"Invalid argument {where}: is not valid JSON", param=where) from None


def tool_calls_of(message: Mapping[str, Any], where: str) -> list[tuple[str, str, Any]]:
    """An assistant message's tool calls as (id, name, arguments value)."""
    out = []
    for k, call in enumerate(message.get("tool_calls") or ()):
        fn = call.get("function") or {}
        at = f"{where}.tool_calls[{k}]"
        if not isinstance(fn.get("name"), str):
            raise InvalidRequestError(f"Invalid argument {at}.function.name: is required", param=at)
        out.append((str(call.get("id") or ""), fn["name"], parse_arguments(fn.get("arguments"), f"{at}.arguments")))
    return out


def tool_names(messages: list[dict[str, Any]]) -> dict[str, str]:
    """Tool call id → function name, from the assistant messages (tool results name no function in OpenAI)."""
    names: dict[str, str] = {}
    for msg in messages:
        for call in msg.get("tool_calls") or ():
            fn = call.get("function") or {}
            if call.get("id") and isinstance(fn.get("name"), str):
                names[str(call["id"])] = fn["name"]
    return names


def new_completion_id() -> str:
    """The id of an answer whose provider gave none: OpenAI's ``chatcmpl-`` form, streamed or not."""
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def new_call_id() -> str:
    """An id for a tool call the provider sent without one."""
    return "call_" + uuid.uuid4().hex[:24]


def safe_id(call_id: str, pattern: str = r"^[A-Za-z0-9_-]{1,64}$") -> str:
    """``call_id`` if it matches ``pattern``, else a stable stand-in (the same id always maps to the same one)."""
    if re.match(pattern, call_id):
        return call_id
    return "call_" + hashlib.sha256(call_id.encode()).hexdigest()[:32]


# -- JSON mode ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JsonMode:
    schema: dict[str, Any] | None
    name: str = "response"


def json_mode(response_format: Any) -> JsonMode | None:
    """The JSON mode ``response_format`` asks for, or None for plain text."""
    if not isinstance(response_format, Mapping) or response_format.get("type") in (None, "text"):
        return None
    if response_format["type"] == "json_schema":
        spec = response_format.get("json_schema") or {}
        return JsonMode(spec.get("schema") or {"type": "object"}, str(spec.get("name") or "response"))
    return JsonMode(None)


def json_instruction(mode: JsonMode) -> str:
    """The documented fallback where no native JSON mode exists: an instruction added to the system prompt."""
    text = "Answer with a single valid JSON value and nothing else: no prose, no code fences."
    if mode.schema is not None:
        text += f" It must conform to this JSON Schema: {dumps(mode.schema).decode()}"
    return text


# -- answers -----------------------------------------------------------------------------------------------------


def usage(
    prompt: int | None, completion: int | None, *, cached: int | None = None, reasoning: int | None = None
) -> CompletionUsage:
    p, c = int(prompt or 0), int(completion or 0)
    return CompletionUsage(
        prompt_tokens=p,
        completion_tokens=c,
        total_tokens=p + c,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached) if cached else None,
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning) if reasoning else None,
    )


def tool_delta(index: int, call_id: str | None, name: str | None, arguments: str) -> ChoiceDeltaToolCall:
    return ChoiceDeltaToolCall(
        index=index,
        id=call_id,
        type="function" if call_id is not None else None,
        function=ChoiceDeltaToolCallFunction(name=name, arguments=arguments),
    )


class ChunkMaker:
    """Builds the OpenAI-shaped chunks of one streamed answer (one id, model and creation time)."""

    def __init__(self, provider: str, model: str, *, include_usage: bool = False) -> None:
        self.provider = provider
        self.id = new_completion_id()
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage

    def make(
        self, delta: ChoiceDelta, finish: str | None = None, *, index: int = 0, usage: CompletionUsage | None = None
    ) -> ChatCompletionChunk:
        chunk = ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[StreamChoice(index=index, delta=delta, finish_reason=finish)],
            usage=usage,
        )
        chunk.provider = self.provider
        return chunk

    def end(self, out: list[ChatCompletionChunk], finish: str, use: CompletionUsage | None, index: int = 0) -> None:
        """The finishing chunk; usage rides on it, or on a separate ``choices: []`` chunk when the caller asked
        for ``stream_options.include_usage`` (OpenAI's shape)."""
        if self.include_usage:
            out.append(self.make(ChoiceDelta(), finish, index=index))
            last = ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=[], usage=use)
            last.provider = self.provider
            out.append(last)
        else:
            out.append(self.make(ChoiceDelta(), finish, index=index, usage=use))


class FrameParser:
    """Base of the stream parsers: raw bytes → frames (subclass: SSE events or NDJSON lines) → chunks.

    Subclasses implement ``_frames`` / ``_flush`` and ``_frame(frame, out)``, and set ``self.finished`` when the
    provider said the answer is complete. Chunks converted before an error in the same read go out first; the
    error is raised by the next call. A body that ends before ``finished`` is reported as cut short.
    """

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.finished = False
        self._error: APIError | None = None

    def feed(self, data: bytes) -> list[ChatCompletionChunk]:
        if self._error is not None:
            raise self._error
        frames = self._frames(data)
        return self._convert(frames) if frames else []

    def finish(self) -> Iterator[ChatCompletionChunk]:
        if self._error is not None:
            raise self._error
        yield from self._convert(self._flush())
        if self._error is not None:
            raise self._error
        if not self.finished:
            raise APIConnectionError(
                "The stream ended before the provider said the answer was complete: it was cut short",
                provider=self.provider,
            )

    def _convert(self, frames: list[Any]) -> list[ChatCompletionChunk]:
        out: list[ChatCompletionChunk] = []
        try:
            for frame in frames:
                if not self.finished:
                    self._frame(frame, out)
        except APIError as e:
            if not out:
                raise
            self._error = e
        return out

    def malformed(self, data: Any, exc: Exception | None = None) -> APIConnectionError:
        return APIConnectionError(
            f"Malformed stream data from the provider: {str(data)[:200]!r}", provider=self.provider
        )

    def _frames(self, data: bytes) -> list[Any]:
        raise NotImplementedError

    def _flush(self) -> list[Any]:
        raise NotImplementedError

    def _frame(self, frame: Any, out: list[ChatCompletionChunk]) -> None:
        raise NotImplementedError


class SSEFrameParser(FrameParser):
    """Frames are server-sent events."""

    def __init__(self, provider: str) -> None:
        super().__init__(provider)
        self._sse = SSEDecoder()

    def _frames(self, data: bytes) -> list[ServerSentEvent]:
        return self._sse.feed(data)

    def _flush(self) -> list[ServerSentEvent]:
        return self._sse.flush()


class NDJSONFrameParser(FrameParser):
    """Frames are lines of newline-delimited JSON (UTF-8 decoded per complete line)."""

    def __init__(self, provider: str) -> None:
        super().__init__(provider)
        self._buf = b""

    def _frames(self, data: bytes) -> list[bytes]:
        *lines, self._buf = (self._buf + data).split(b"\n")
        return [line for line in lines if line.strip()]

    def _flush(self) -> list[bytes]:
        rest, self._buf = self._buf, b""
        return [rest] if rest.strip() else []
