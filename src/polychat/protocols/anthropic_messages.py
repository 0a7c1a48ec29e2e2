"""Anthropic Messages ⇄ polychat's normalised (OpenAI-shaped) request and answers, both ways, pure.

Wire facts (https://docs.anthropic.com/en/api/messages, /messages-streaming, /errors):

* request: ``model``, ``max_tokens`` (required), ``messages`` (``user``/``assistant`` turns, content a string or
  blocks: ``text``, ``image``, ``tool_use``, ``tool_result``, ``thinking``, ``redacted_thinking``), ``system`` (a
  string or text blocks), ``tools`` (``name``, ``description``, ``input_schema``), ``tool_choice`` (``auto``,
  ``any``, ``tool``, ``none``, with ``disable_parallel_tool_use``), ``stop_sequences``, ``temperature``,
  ``top_p``, ``top_k``, ``metadata.user_id``, ``thinking``, ``output_config`` (``effort``, ``format``), top-level
  ``cache_control``, ``stream``;
* answer: ``{"id", "type": "message", "role": "assistant", "model", "content": [blocks], "stop_reason",
  "stop_sequence", "usage": {"input_tokens", "output_tokens", "cache_creation_input_tokens",
  "cache_read_input_tokens"}}`` — ``input_tokens`` excludes cached tokens, unlike OpenAI's ``prompt_tokens``;
* stream: ``message_start``, ``ping``, per block ``content_block_start`` / ``content_block_delta`` (``text_delta``,
  ``input_json_delta``, ``thinking_delta``, ``signature_delta``) / ``content_block_stop``, ``message_delta``
  (``stop_reason``, usage), ``message_stop``; after a 200, a failure is ``event: error``;
* errors: ``{"type": "error", "error": {"type", "message"}}`` with ``invalid_request_error`` (400),
  ``authentication_error`` (401), ``permission_error`` (403), ``not_found_error`` (404), ``request_too_large``
  (413), ``rate_limit_error`` (429), ``api_error`` (500), ``overloaded_error`` (529).

Any provider can answer: the request becomes OpenAI-shaped messages and parameters. What that shape cannot carry
is kept in :class:`~polychat._request.NativeRequest` (``lossy`` names it): a provider speaking Anthropic's protocol
gets the client's body unchanged (thinking blocks and their signatures, ``cache_control``, ``top_k``, documents,
server tools...), every other provider refuses the request naming the first such field, unless the client opted in
to dropping (``x-polychat-drop-unsupported: true``). ``cache_control`` and earlier turns' thinking blocks are the
exception: they do not change an answer (Anthropic itself leaves old thinking out of the context), so they are
left out for other providers, and the answer's ``x-polychat-dropped`` header says so.

Answers from an Anthropic provider come back as its own events and bodies (``chunk.native``), forwarded as sent;
answers from any other provider are translated by :class:`MessageStream` and :func:`to_message`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from .._json import dumps, loads
from .._request import NativeRequest
from ..errors import InvalidRequestError
from ..types import ChatCompletion, ChatCompletionChunk, CompletionUsage

PROTOCOL = "anthropic"

#: OpenAI finish reasons → Anthropic stop reasons.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

#: HTTP status → Anthropic error type.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

#: Request fields only Anthropic's own API can honour (kept in the native body, refused elsewhere).
ANTHROPIC_ONLY = (
    "top_k",
    "container",
    "mcp_servers",
    "context_management",
    "inference_geo",
    "diagnostics",
    "user_profile_id",
    "workspace_id",
)
#: Fields that do not change an answer; left out (and reported) for other providers.
HINTS = ("cache_control",)
#: ``output_config.effort`` → OpenAI's ``reasoning_effort`` (``xhigh`` and ``max`` have no OpenAI equivalent).
EFFORTS = {"low": "low", "medium": "medium", "high": "high"}

_KNOWN = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "stream",
        "stop_sequences",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
        "output_config",
        "service_tier",
        "speed",
        *HINTS,
        *ANTHROPIC_ONLY,
    }
)


def _bad(param: str, problem: str) -> InvalidRequestError:
    return InvalidRequestError(f"{param}: {problem}", param=param)


def _need_str(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _bad(param, f"Field required to be a string, got {type(value).__name__}")
    return value


def _need_int(value: Any, param: str, lo: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise _bad(param, f"must be an integer >= {lo}")
    return value


def _need_num(value: Any, param: str, lo: float, hi: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
        raise _bad(param, f"must be a number between {lo:g} and {hi:g}")
    return value


class _Notes:
    """What the translation had to leave out: ``lossy`` (changes the answer: other providers refuse) and
    ``dropped`` (hints that do not: left out and reported)."""

    def __init__(self) -> None:
        self.lossy: list[str] = []
        self.dropped: list[str] = []

    def lose(self, param: str) -> None:
        if param not in self.lossy:
            self.lossy.append(param)

    def drop(self, what: str) -> None:
        if what not in self.dropped:
            self.dropped.append(what)


class ChatCall:
    """A Messages request as polychat's call: ``create(model, messages, stream, **kwargs)``."""

    __slots__ = ("dropped", "kwargs", "lossy", "messages", "model", "stream")

    def __init__(
        self,
        model: str,
        messages: list[dict[str, Any]],
        stream: bool,
        kwargs: dict[str, Any],
        dropped: list[str],
        lossy: list[str],
    ) -> None:
        self.model = model
        self.messages = messages
        self.stream = stream
        self.kwargs = kwargs
        #: Hints left out for providers that do not speak Anthropic's protocol.
        self.dropped = dropped
        #: What such providers cannot honour (they refuse it, unless the call allows dropping).
        self.lossy = lossy


def to_chat(body: Mapping[str, Any], *, headers: Mapping[str, str] | None = None) -> ChatCall:
    """Validate a Messages request body and translate it; raises :class:`InvalidRequestError` naming the field.

    ``headers``: the client's ``anthropic-beta`` / ``anthropic-version`` headers, passed on to Anthropic providers.
    """
    notes = _Notes()
    for key in body:
        if key not in _KNOWN:
            notes.lose(key)  # a newer Anthropic feature: only Anthropic can be asked
    if "model" not in body:
        raise _bad("model", "Field required")
    model = _need_str(body["model"], "model")
    if "max_tokens" not in body:
        raise _bad("max_tokens", "Field required")
    max_tokens = _need_int(body["max_tokens"], "max_tokens", 1)
    if "messages" not in body:
        raise _bad("messages", "Field required")
    raw_messages = body["messages"]
    if not isinstance(raw_messages, list) or not raw_messages:
        raise _bad("messages", "must be a non-empty list of {role, content} turns")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("stream", "must be true or false")

    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        text = _system_text(system, notes)
        if text:
            messages.append({"role": "system", "content": text})
    for i, turn in enumerate(raw_messages):
        messages.extend(_turn(turn, f"messages.{i}", notes))

    kwargs: dict[str, Any] = {"max_tokens": max_tokens}
    if "stop_sequences" in body and body["stop_sequences"] is not None:
        stops = body["stop_sequences"]
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("stop_sequences", "must be a list of strings")
        if stops:
            kwargs["stop"] = list(stops)
    if body.get("temperature") is not None:
        kwargs["temperature"] = _need_num(body["temperature"], "temperature", 0, 1)
    if body.get("top_p") is not None:
        kwargs["top_p"] = _need_num(body["top_p"], "top_p", 0, 1)
    if body.get("top_k") is not None:
        _need_int(body["top_k"], "top_k", 0)
    for key in ANTHROPIC_ONLY:
        if body.get(key) is not None:
            notes.lose(key)
    _hints(body, notes)  # top-level cache_control: automatic prompt caching
    if body.get("speed") not in (None, "standard"):
        notes.lose("speed")
    if body.get("service_tier") not in (None, "auto", "standard_only"):
        raise _bad("service_tier", "must be 'auto' or 'standard_only'")
    _output_config(body.get("output_config"), kwargs, notes)
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise _bad("metadata", "must be an object")
        user = metadata.get("user_id")
        if user is not None:
            kwargs["user"] = _need_str(user, "metadata.user_id")
    _thinking(body.get("thinking"), kwargs)
    tools = body.get("tools")
    if tools is not None:
        converted = _tools(tools, notes)
        if converted:
            kwargs["tools"] = converted
    choice = body.get("tool_choice")
    if choice is not None:
        _tool_choice(choice, kwargs)
    if stream:
        kwargs["stream_options"] = {"include_usage": True}
    forward = {k: v for k, v in (headers or {}).items() if k in ("anthropic-beta", "anthropic-version")}
    kwargs["native_request"] = NativeRequest(PROTOCOL, dict(body), forward, tuple(notes.lossy))
    return ChatCall(model, messages, stream, kwargs, notes.dropped, notes.lossy)


def _system_text(system: Any, notes: _Notes) -> str:
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise _bad("system", "must be a string or a list of text blocks")
    pieces = []
    for j, block in enumerate(system):
        if not isinstance(block, Mapping) or block.get("type") != "text":
            raise _bad(f"system.{j}", "must be a text block {'type': 'text', 'text': ...}")
        pieces.append(_need_str(block.get("text"), f"system.{j}.text"))
        _hints(block, notes)
    return "\n\n".join(pieces)


def _hints(block: Mapping[str, Any], notes: _Notes) -> None:
    for key in HINTS:
        if key in block:
            notes.drop(key)
    if block.get("citations"):
        notes.lose("citations")


def _image(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, Mapping):
        raise _bad(f"{where}.source", "Field required")
    kind = source.get("type")
    if kind == "base64":
        media = _need_str(source.get("media_type"), f"{where}.source.media_type")
        data = _need_str(source.get("data"), f"{where}.source.data")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if kind == "url":
        return {"type": "image_url", "image_url": {"url": _need_str(source.get("url"), f"{where}.source.url")}}
    raise _bad(f"{where}.source.type", f"{kind!r} is not supported (use 'base64' or 'url')")


def _tool_result_text(content: Any, where: str, notes: _Notes) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(f"{where}.content", "must be a string or a list of blocks")
    pieces = []
    for k, block in enumerate(content):
        if not isinstance(block, Mapping):
            raise _bad(f"{where}.content.{k}", "must be a block")
        if block.get("type") == "text":
            pieces.append(_need_str(block.get("text"), f"{where}.content.{k}.text"))
            _hints(block, notes)
        else:
            notes.lose(f"{where}.content.{k}")  # an image (or document) inside a tool result
    return "".join(pieces)


def _turn(turn: Any, where: str, notes: _Notes) -> list[dict[str, Any]]:
    """One Anthropic turn → OpenAI messages (a user turn with tool results becomes tool messages first)."""
    if not isinstance(turn, Mapping):
        raise _bad(where, "must be an object with 'role' and 'content'")
    role = turn.get("role")
    if role not in ("user", "assistant"):
        raise _bad(f"{where}.role", f"must be 'user' or 'assistant', got {role!r}")
    if "content" not in turn:
        raise _bad(f"{where}.content", "Field required")
    content = turn["content"]
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _bad(f"{where}.content", "must be a string or a list of content blocks")
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.content.{j}"
        if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
            raise _bad(at, "must be a content block with a 'type'")
        kind = block["type"]
        _hints(block, notes)
        if kind == "text":
            parts.append({"type": "text", "text": _need_str(block.get("text"), f"{at}.text")})
        elif kind == "image":
            parts.append(_image(block, at))
        elif kind == "tool_use" and role == "assistant":
            name = _need_str(block.get("name"), f"{at}.name")
            call_id = _need_str(block.get("id"), f"{at}.id")
            arguments = dumps(block.get("input") or {}).decode()
            calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
        elif kind == "tool_result" and role == "user":
            call_id = _need_str(block.get("tool_use_id"), f"{at}.tool_use_id")
            text = _tool_result_text(block.get("content"), at, notes)
            if block.get("is_error"):
                text = f"Error: {text}" if text else "Error"
            out.append({"role": "tool", "tool_call_id": call_id, "content": text})
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            notes.drop("thinking")  # Anthropic also leaves earlier turns' thinking out of the context
        else:
            notes.lose(at)  # documents, search results, server tool blocks...: Anthropic only
    if role == "assistant":
        if parts or calls:
            text = "".join(p["text"] for p in parts if p["type"] == "text")
            if any(p["type"] != "text" for p in parts):
                raise _bad(f"{where}.content", "an assistant turn can hold text and tool_use blocks only")
            # "" rather than None beside tool calls: OpenAI takes both, llama.cpp's server only a string
            msg: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
        return out
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        out.append({"role": "user", "content": "".join(p["text"] for p in parts) if only_text else parts})
    return out


def _tools(tools: Any, notes: _Notes) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools", "must be a list")
    out = []
    for i, tool in enumerate(tools):
        at = f"tools.{i}"
        if not isinstance(tool, Mapping):
            raise _bad(at, "must be an object")
        _hints(tool, notes)
        if tool.get("type") not in (None, "custom"):
            notes.lose(at)  # a server tool (web search, code execution, text editor...): Anthropic only
            continue
        name = _need_str(tool.get("name"), f"{at}.name")
        schema = tool.get("input_schema")
        if not isinstance(schema, Mapping):
            raise _bad(f"{at}.input_schema", "Field required")
        fn: dict[str, Any] = {"name": name, "parameters": dict(schema)}
        if tool.get("description") is not None:
            fn["description"] = _need_str(tool["description"], f"{at}.description")
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any, kwargs: dict[str, Any]) -> None:
    if not isinstance(choice, Mapping):
        raise _bad("tool_choice", "must be an object such as {'type': 'auto'}")
    kind = choice.get("type")
    if kind == "auto":
        kwargs["tool_choice"] = "auto"
    elif kind == "any":
        kwargs["tool_choice"] = "required"
    elif kind == "none":
        kwargs["tool_choice"] = "none"
    elif kind == "tool":
        name = _need_str(choice.get("name"), "tool_choice.name")
        kwargs["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise _bad("tool_choice.type", f"must be 'auto', 'any', 'tool' or 'none', got {kind!r}")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        kwargs["parallel_tool_calls"] = False


def _output_config(config: Any, kwargs: dict[str, Any], notes: _Notes) -> None:
    if config is None:
        return
    if not isinstance(config, Mapping):
        raise _bad("output_config", "must be an object")
    effort = config.get("effort")
    if effort is not None:
        if effort in EFFORTS:
            kwargs["reasoning_effort"] = EFFORTS[effort]
        else:
            notes.lose("output_config.effort")
    fmt = config.get("format")
    if fmt is not None:
        if (
            not isinstance(fmt, Mapping)
            or fmt.get("type") != "json_schema"
            or not isinstance(fmt.get("schema"), Mapping)
        ):
            raise _bad("output_config.format", "must be {'type': 'json_schema', 'schema': {...}}")
        kwargs["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": dict(fmt["schema"])},
        }


def _thinking(thinking: Any, kwargs: dict[str, Any]) -> None:
    if thinking is None:
        return
    if not isinstance(thinking, Mapping):
        raise _bad("thinking", "must be an object such as {'type': 'enabled', 'budget_tokens': 2048}")
    kind = thinking.get("type")
    if kind == "disabled":
        return
    if kind not in ("enabled", "adaptive", "between_tools"):
        raise _bad("thinking.type", f"must be 'enabled', 'adaptive', 'between_tools' or 'disabled', got {kind!r}")
    budget = thinking.get("budget_tokens")
    if kind == "enabled":
        budget = _need_int(budget, "thinking.budget_tokens", 1024)
    # OpenAI's nearest switch; a provider without reasoning refuses it (naming reasoning_effort).
    kwargs["reasoning_effort"] = "high" if budget is None or budget >= 16384 else "medium" if budget >= 4096 else "low"


# -- answers ------------------------------------------------------------------------------------------------------


def message_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


def usage_of(u: CompletionUsage | None) -> dict[str, int]:
    """OpenAI usage → Anthropic's (whose ``input_tokens`` leaves out cache reads)."""
    if u is None:
        return {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    cached = (u.prompt_tokens_details.cached_tokens or 0) if u.prompt_tokens_details else 0
    return {
        "input_tokens": max(0, u.prompt_tokens - cached),
        "output_tokens": u.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def _input_of(arguments: str) -> Any:
    try:
        value = loads(arguments) if arguments.strip() else {}
    except Exception:
        return {"_raw_arguments": arguments}  # the model wrote invalid JSON: hand it over rather than lose it
    return value if isinstance(value, dict) else {"value": value}


def to_message(completion: ChatCompletion, model: str) -> dict[str, Any]:
    """A completion as Anthropic's answer; an Anthropic provider's own answer is returned as it sent it."""
    native = completion.native
    if native is not None and native.get("type") == "message":
        return native
    content: list[dict[str, Any]] = []
    finish = None
    if completion.choices:
        choice = completion.choices[0]
        finish = choice.finish_reason
        msg = choice.message
        if msg.content:
            content.append({"type": "text", "text": msg.content})
        for call in msg.tool_calls or ():
            content.append(
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.function.name,
                    "input": _input_of(call.function.arguments),
                }
            )
    stop = STOP_REASONS.get(finish or "stop", "end_turn")
    if content and content[-1]["type"] == "tool_use":
        stop = "tool_use"
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": completion.model or model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage_of(completion.usage),
    }


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}


def event(name: str, payload: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(payload) + b"\n\n"


class MessageStream:
    """One answer's chunks → Anthropic stream events (bytes).

    Chunks from an Anthropic provider carry the upstream's own event (``chunk.native``) and are forwarded as they
    are, with block indexes renumbered when an answer continues on another attempt; other chunks are translated.
    Both kinds can meet in one answer (a resumed stream), so the open block and the next index are kept here.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = False
        self.finished = False
        self.open: int | None = None  # index of the open block
        self.open_kind: str | None = None
        self.next_index = 0
        self.tools: dict[int, int] = {}  # OpenAI tool-call index → block index
        self.remap: dict[int, int] = {}  # upstream block index → our index (native events)
        self.stop_reason: str | None = None
        self.usage: dict[str, int] = usage_of(None)
        self.delta_sent = False

    # -- shared -------------------------------------------------------------------------------------------------

    def _start(self, out: list[bytes], msg_id: str | None = None, model: str | None = None) -> None:
        if self.started:
            return
        self.started = True
        message: dict[str, Any] = {
            "id": msg_id or message_id(),
            "type": "message",
            "role": "assistant",
            "model": model or self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**self.usage, "output_tokens": 1},
        }
        out.append(event("message_start", {"type": "message_start", "message": message}))
        out.append(event("ping", {"type": "ping"}))

    def _close_block(self, out: list[bytes]) -> None:
        if self.open is not None:
            out.append(event("content_block_stop", {"type": "content_block_stop", "index": self.open}))
            self.open = self.open_kind = None

    def _open_block(self, out: list[bytes], block: dict[str, Any]) -> int:
        self._close_block(out)
        index = self.open = self.next_index
        self.open_kind = block["type"]
        self.next_index += 1
        out.append(
            event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        )
        return index

    def chunk(self, chunk: ChatCompletionChunk) -> bytes:
        out: list[bytes] = []
        native = chunk.native
        if native is not None:
            if native:
                self._native(native, out)
        else:
            self._translate(chunk, out)
        return b"".join(out)

    def end(self) -> bytes:
        out: list[bytes] = []
        self._start(out)
        self._close_block(out)
        if not self.delta_sent:
            delta = {"stop_reason": self.stop_reason or "end_turn", "stop_sequence": None}
            out.append(event("message_delta", {"type": "message_delta", "delta": delta, "usage": self.usage}))
        if not self.finished:
            out.append(event("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def error_event(self, status: int, message: str) -> bytes:
        """``event: error`` for a failure after the stream started."""
        return event("error", error_body(status, message))

    # -- translated ---------------------------------------------------------------------------------------------

    def _translate(self, chunk: ChatCompletionChunk, out: list[bytes]) -> None:
        self._start(out, None, chunk.model or None)
        if chunk.usage is not None:
            self.usage = usage_of(chunk.usage)
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta.content:
                if self.open_kind != "text":
                    self._open_block(out, {"type": "text", "text": ""})
                payload = {"type": "text_delta", "text": delta.content}
                out.append(event("content_block_delta", _delta(self.open, payload)))
            for call in delta.tool_calls or ():
                fn = call.function
                index = self.tools.get(call.index)
                if index is None:
                    block = {
                        "type": "tool_use",
                        "id": call.id or _tool_id(),
                        "name": (fn.name if fn else "") or "",
                        "input": {},
                    }
                    index = self.tools[call.index] = self._open_block(out, block)
                if fn is not None and fn.arguments:
                    payload = {"type": "input_json_delta", "partial_json": fn.arguments}
                    out.append(event("content_block_delta", _delta(index, payload)))
            if choice.finish_reason:
                self.stop_reason = STOP_REASONS.get(choice.finish_reason, "end_turn")
                if self.stop_reason == "end_turn" and self.tools:
                    self.stop_reason = "tool_use"

    # -- native -------------------------------------------------------------------------------------------------

    def _native(self, ev: dict[str, Any], out: list[bytes]) -> None:
        kind = ev.get("type")
        if kind == "message_start":
            self.remap = {}
            if not self.started:
                self.started = True
                out.append(event("message_start", ev))
        elif kind == "ping":
            out.append(event("ping", ev))
        elif kind == "content_block_start":
            self._close_block(out)
            index = self.remap[ev.get("index", 0)] = self.next_index
            self.next_index += 1
            self.open, self.open_kind = index, (ev.get("content_block") or {}).get("type")
            out.append(event("content_block_start", {**ev, "index": index}))
        elif kind == "content_block_delta":
            ours = self.remap.get(ev.get("index", 0))
            if ours is not None:
                out.append(event("content_block_delta", {**ev, "index": ours}))
        elif kind == "content_block_stop":
            ours = self.remap.get(ev.get("index", 0))
            if ours is not None and ours == self.open:
                out.append(event("content_block_stop", {**ev, "index": ours}))
                self.open = self.open_kind = None
        elif kind == "message_delta":
            self._close_block(out)
            self.delta_sent = True
            out.append(event("message_delta", ev))
        elif kind == "message_stop":
            self.finished = True
            out.append(event("message_stop", ev))
        elif isinstance(kind, str):
            out.append(event(kind, ev))  # an event type newer than this code: the client may know it


def _delta(index: int | None, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def _tool_id() -> str:
    return "toolu_" + uuid.uuid4().hex[:24]
