"""The shapes of the structured parts of a request: tool calls in messages, tools, ``response_format``, headers.

:mod:`polychat._request` checks scalar parameters; the nested ones are checked here, once, before any provider
sees them, so a provider's converter can rely on the shape (a string where a list of calls belongs would
otherwise surface as an ``AttributeError`` deep inside one adapter and not another). Each function returns the
problem as text (``None``: fine); the caller turns it into an :class:`~polychat.errors.InvalidRequestError`
naming the parameter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: RFC 9110 ``token``: what a header name may contain.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
#: Header values: visible ASCII, space and tab. CR/LF would split the request; other bytes are encoded
#: differently by the sync (httpx) and async (aiohttp) transports, so both refuse them alike.
_VALUE = re.compile(r"^[\t\x20-\x7e]*$")


def _opt(value: Any, kind: type | tuple[type, ...]) -> bool:
    return value is None or isinstance(value, kind)


def _function(fn: Any, at: str) -> str | None:
    if not isinstance(fn, Mapping):
        return f"{at}.function must be an object with a 'name'"
    if not isinstance(fn.get("name"), str) or not fn["name"]:
        return f"{at}.function.name must be a non-empty string"
    return None


def tool_call_problem(call: Any, at: str) -> str | None:
    """An assistant message's ``tool_calls[k]``: ``{"id", "type": "function", "function": {"name", "arguments"}}``."""
    if not isinstance(call, Mapping):
        return f"{at} must be an object with 'id', 'type' and 'function'"
    if not _opt(call.get("id"), str):
        return f"{at}.id must be a string"
    if not _opt(call.get("type"), str):
        return f"{at}.type must be a string"
    problem = _function(call.get("function"), at)
    if problem:
        return problem
    if not _opt(call["function"].get("arguments"), (str, Mapping)):
        return f"{at}.function.arguments must be a JSON string"
    return None


def message_calls_problem(msg: Mapping[str, Any], where: str) -> str | None:
    """``tool_calls`` and the legacy ``function_call`` of one message."""
    calls = msg.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, (list, tuple)):
            return f"{where}.tool_calls must be a list of tool calls, got {type(calls).__name__}"
        for k, call in enumerate(calls):
            problem = tool_call_problem(call, f"{where}.tool_calls[{k}]")
            if problem:
                return problem
    legacy = msg.get("function_call")
    if legacy is not None:
        if not isinstance(legacy, Mapping) or not isinstance(legacy.get("name"), str):
            return f"{where}.function_call must be an object with a 'name'"
        if not _opt(legacy.get("arguments"), (str, Mapping)):
            return f"{where}.function_call.arguments must be a JSON string"
    if not _opt(msg.get("name"), str):
        return f"{where}.name must be a string"
    return None


def tools_problem(tools: Any) -> str | None:
    """``tools``: a list of ``{"type": "function", "function": {"name", "description", "parameters"}}`` (other
    tool types pass: a provider that cannot honour one refuses it by name)."""
    if not isinstance(tools, (list, tuple)):
        return "must be a list"
    for i, tool in enumerate(tools):
        at = f"item {i}"
        if not isinstance(tool, Mapping):
            return f"{at} must be an object (dict)"
        kind = tool.get("type", "function")
        if not isinstance(kind, str):
            return f"{at}.type must be a string"
        if kind != "function":
            continue
        problem = _function(tool.get("function"), at)
        if problem:
            return problem
        fn = tool["function"]
        if not _opt(fn.get("description"), str):
            return f"{at}.function.description must be a string"
        if not _opt(fn.get("parameters"), Mapping):
            return f"{at}.function.parameters must be a JSON Schema object"
    return None


def functions_problem(functions: Any) -> str | None:
    """The legacy ``functions``: a list of ``{"name", "description", "parameters"}``."""
    return tools_problem(
        [{"type": "function", "function": f} if isinstance(f, Mapping) else f for f in functions]
        if isinstance(functions, (list, tuple))
        else functions
    )


def response_format_problem(v: Any) -> str | None:
    if not isinstance(v, Mapping):
        return "must be an object such as {'type': 'json_object'}"
    t = v.get("type")
    if t not in ("text", "json_object", "json_schema"):
        return "type must be 'text', 'json_object' or 'json_schema'"
    if t != "json_schema":
        return None
    spec = v.get("json_schema")
    if not isinstance(spec, Mapping):
        return "with type 'json_schema' needs a 'json_schema' object"
    if not _opt(spec.get("schema"), Mapping):
        return "json_schema.schema must be a JSON Schema object"
    if not _opt(spec.get("name"), str):
        return "json_schema.name must be a string"
    return None


def tool_choice_problem(v: Any) -> str | None:
    if isinstance(v, str):
        return None if v in ("auto", "none", "required") else "must be 'auto', 'none', 'required' or a function"
    if not isinstance(v, Mapping):
        return "must be a string or an object (dict)"
    if "function" in v or v.get("type") == "function":
        return _function(v.get("function"), "the object's")
    return None


def stream_options_problem(v: Any) -> str | None:
    if not isinstance(v, Mapping):
        return "must be an object (dict)"
    return None if _opt(v.get("include_usage"), bool) else "include_usage must be true or false"


def header_problem(name: Any, value: Any) -> str | None:
    """One extra header: a token name and a one-line printable value (checked before anything is sent)."""
    if not isinstance(name, str) or not _TOKEN.match(name):
        return f"header name {name!r} is not a valid HTTP header name"
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        return f"header {name!r} must have a string value, got {type(value).__name__}"
    if not _VALUE.match(str(value)):
        return f"header {name!r} has a value with a line break, control or non-ASCII character"
    return None
