"""The request half of :mod:`polychat.protocols.anthropic_messages`: a Messages body, validated, becomes a
:class:`ChatCall` (OpenAI-shaped messages and parameters, plus the body itself for Anthropic providers).

Errors name the field the way Anthropic's API does (``messages.0.content: ...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._json import dumps
from .._request import NativeRequest
from ..errors import InvalidRequestError
from ._common import Call, bad

PROTOCOL = "anthropic"

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
    return bad(param, f"{param}: {problem}")


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


@dataclass(eq=False, repr=False, slots=True)
class ChatCall(Call):
    """A Messages request as polychat's call."""

    #: Hints left out for providers that do not speak Anthropic's protocol.
    dropped: list[str]
    #: What such providers cannot honour (they refuse it, unless the call allows dropping).
    lossy: list[str]


def to_chat(body: Mapping[str, Any], *, headers: Mapping[str, str] | None = None) -> ChatCall:
    """Validate a Messages request body and translate it; raises :class:`InvalidRequestError` naming the field.

    ``headers``: the client's ``anthropic-beta`` / ``anthropic-version`` headers, passed on to Anthropic providers.
    """
    notes = _Notes()
    for key in body:
        if key not in _KNOWN:
            notes.lose(key)  # a newer Anthropic feature: only Anthropic can be asked
    model, max_tokens, turns, stream = _required(body)
    messages = _messages(body.get("system"), turns, notes)
    kwargs: dict[str, Any] = {"max_tokens": max_tokens}
    _sampling(body, kwargs)
    _anthropic_only(body, notes)
    _output_config(body.get("output_config"), kwargs, notes)
    _metadata(body.get("metadata"), kwargs)
    _thinking(body.get("thinking"), kwargs)
    tools = _tools(body.get("tools"), notes)
    if tools:
        kwargs["tools"] = tools
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], kwargs)
    if stream:
        kwargs["stream_options"] = {"include_usage": True}
    forward = {k: v for k, v in (headers or {}).items() if k in ("anthropic-beta", "anthropic-version")}
    kwargs["native_request"] = NativeRequest(PROTOCOL, dict(body), forward, tuple(notes.lossy))
    return ChatCall(model, messages, stream, kwargs, notes.dropped, notes.lossy)


def _required(body: Mapping[str, Any]) -> tuple[str, int, list[Any], bool]:
    """The fields every request has (``model``, ``max_tokens``, ``messages``) and ``stream``, checked in
    Anthropic's order so the first error is the one its API would name."""
    if "model" not in body:
        raise _bad("model", "Field required")
    model = _need_str(body["model"], "model")
    if "max_tokens" not in body:
        raise _bad("max_tokens", "Field required")
    max_tokens = _need_int(body["max_tokens"], "max_tokens", 1)
    if "messages" not in body:
        raise _bad("messages", "Field required")
    turns = body["messages"]
    if not isinstance(turns, list) or not turns:
        raise _bad("messages", "must be a non-empty list of {role, content} turns")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("stream", "must be true or false")
    return model, max_tokens, turns, stream


def _messages(system: Any, turns: list[Any], notes: _Notes) -> list[dict[str, Any]]:
    """The OpenAI message list: the top-level ``system`` becomes a leading system message, then every turn."""
    messages: list[dict[str, Any]] = []
    if system is not None:
        text = _system_text(system, notes)
        if text:
            messages.append({"role": "system", "content": text})
    for i, turn in enumerate(turns):
        messages.extend(_turn(turn, f"messages.{i}", notes))
    return messages


def _sampling(body: Mapping[str, Any], kwargs: dict[str, Any]) -> None:
    """``stop_sequences``, ``temperature`` and ``top_p`` under their OpenAI names; ``top_k`` only checked
    (it has no OpenAI equivalent: :data:`ANTHROPIC_ONLY` keeps it for Anthropic)."""
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


def _anthropic_only(body: Mapping[str, Any], notes: _Notes) -> None:
    """Note the top-level fields that only Anthropic honours (other providers refuse them) or that are mere
    hints (left out for them); check ``service_tier``, which every provider can ignore."""
    for key in ANTHROPIC_ONLY:
        if body.get(key) is not None:
            notes.lose(key)
    _hints(body, notes)  # top-level cache_control: automatic prompt caching
    if body.get("speed") not in (None, "standard"):
        notes.lose("speed")
    if body.get("service_tier") not in (None, "auto", "standard_only"):
        raise _bad("service_tier", "must be 'auto' or 'standard_only'")


def _metadata(metadata: Any, kwargs: dict[str, Any]) -> None:
    """``metadata.user_id`` → OpenAI's ``user``."""
    if metadata is None:
        return
    if not isinstance(metadata, Mapping):
        raise _bad("metadata", "must be an object")
    user = metadata.get("user_id")
    if user is not None:
        kwargs["user"] = _need_str(user, "metadata.user_id")


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
            calls.append(_tool_call(block, at))
        elif kind == "tool_result" and role == "user":
            out.append(_tool_message(block, at, notes))
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            notes.drop("thinking")  # Anthropic also leaves earlier turns' thinking out of the context
        else:
            notes.lose(at)  # documents, search results, server tool blocks...: Anthropic only
    if role == "assistant":
        if parts or calls:
            out.append(_assistant_message(parts, calls, where))
        return out
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        out.append({"role": "user", "content": "".join(p["text"] for p in parts) if only_text else parts})
    return out


def _tool_call(block: Mapping[str, Any], at: str) -> dict[str, Any]:
    """A ``tool_use`` block → an OpenAI tool call (its input as a JSON string)."""
    name = _need_str(block.get("name"), f"{at}.name")
    call_id = _need_str(block.get("id"), f"{at}.id")
    arguments = dumps(block.get("input") or {}).decode()
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _tool_message(block: Mapping[str, Any], at: str, notes: _Notes) -> dict[str, Any]:
    """A ``tool_result`` block → an OpenAI tool message (an error result says so in its text)."""
    call_id = _need_str(block.get("tool_use_id"), f"{at}.tool_use_id")
    text = _tool_result_text(block.get("content"), at, notes)
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _assistant_message(parts: list[dict[str, Any]], calls: list[dict[str, Any]], where: str) -> dict[str, Any]:
    """An assistant turn's text and tool calls as one OpenAI message."""
    if any(p["type"] != "text" for p in parts):
        raise _bad(f"{where}.content", "an assistant turn can hold text and tool_use blocks only")
    # "" rather than None beside tool calls: OpenAI takes both, llama.cpp's server only a string
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(p["text"] for p in parts)}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tools(tools: Any, notes: _Notes) -> list[dict[str, Any]]:
    if tools is None:
        return []
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
