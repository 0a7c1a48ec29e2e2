"""The request half of :mod:`polychat.protocols.responses`: a Responses body, validated, becomes a
:class:`ResponsesCall` (OpenAI chat messages and parameters, plus the settings the answer echoes).

Errors read the way OpenAI's API words them (``Invalid type for 'input': ...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._common import Call, bad

#: Settings a response echoes back, with the value when the request leaves them out.
ECHOED: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "temperature": None,
    "top_p": None,
    "tool_choice": "auto",
    "tools": [],
    "text": {"format": {"type": "text"}},
    "truncation": "disabled",
    "user": None,
}

_ACCEPTED = frozenset(
    {
        "model",
        "input",
        "stream",
        "store",
        "previous_response_id",
        "include",
        "reasoning",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        *ECHOED,
    }
)
_STATELESS = (
    "This gateway keeps no state between requests: {what} is not supported. Send the whole conversation in "
    "'input' each time, with 'store': false."
)
#: ``include`` values that ask for nothing polychat would leave out.
_INCLUDABLE = frozenset({"reasoning.encrypted_content", "message.output_text.logprobs"})


def _str(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise bad(param, f"Invalid type for '{param}': expected a string, but got {type(value).__name__}.")
    return value


@dataclass(eq=False, repr=False, slots=True)
class ResponsesCall(Call):
    """A Responses request as polychat's call, and what the answer echoes."""

    echo: dict[str, Any]


def to_chat(body: Mapping[str, Any]) -> ResponsesCall:
    """Validate a Responses request body and translate it; raises :class:`InvalidRequestError` naming the field."""
    model, stream = _servable(body)
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        messages.append({"role": "system", "content": _str(instructions, "instructions")})
    messages.extend(input_messages(body["input"]))
    kwargs = _parameters(body)
    if stream:
        kwargs["stream_options"] = {"include_usage": True}
    return ResponsesCall(model, messages, stream, kwargs, _echo(body))


def _servable(body: Mapping[str, Any]) -> tuple[str, bool]:
    """The model and the stream switch, once the request asks nothing this stateless gateway cannot do (unknown
    parameters, stored responses, ``include`` values it cannot provide, truncation)."""
    for key in body:
        if key not in _ACCEPTED:
            raise bad(key, f"Unsupported parameter: '{key}' is not supported by this gateway.")
    if body.get("store") is True:
        raise bad("store", _STATELESS.format(what="'store': true"))
    if body.get("previous_response_id") is not None:
        raise bad("previous_response_id", _STATELESS.format(what="'previous_response_id'"))
    if "model" not in body:
        raise bad("model", "Missing required parameter: 'model'.")
    model = _str(body["model"], "model")
    if "input" not in body:
        raise bad("input", "Missing required parameter: 'input'.")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise bad("stream", "Invalid type for 'stream': expected a boolean.")
    for value in body.get("include") or ():
        if value not in _INCLUDABLE:
            raise bad("include", f"Unsupported include value {value!r}: this gateway cannot provide it.")
    if body.get("truncation") not in (None, "disabled"):
        raise bad("truncation", "Only 'truncation': 'disabled' is supported: the gateway does not cut the input.")
    return model, stream


#: Responses parameters passed on as they are, under their Chat Completions names.
_RENAMED = (
    ("max_tokens", "max_output_tokens"),
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("parallel_tool_calls", "parallel_tool_calls"),
    ("user", "user"),
    ("metadata", "metadata"),
    ("service_tier", "service_tier"),
    ("safety_identifier", "safety_identifier"),
    ("prompt_cache_key", "prompt_cache_key"),
)


def _parameters(body: Mapping[str, Any]) -> dict[str, Any]:
    """The Chat Completions parameters: renamed ones, ``reasoning.effort``, tools, tool choice, output format."""
    kwargs: dict[str, Any] = {ours: body[theirs] for ours, theirs in _RENAMED if body.get(theirs) is not None}
    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, Mapping):
            raise bad("reasoning", "Invalid type for 'reasoning': expected an object.")
        if reasoning.get("effort") is not None:
            kwargs["reasoning_effort"] = reasoning["effort"]
        if reasoning.get("summary") not in (None, "auto", "none"):
            raise bad("reasoning.summary", "Reasoning summaries are not available through this gateway.")
    if body.get("tools"):
        kwargs["tools"] = _tools(body["tools"])
    choice = body.get("tool_choice")
    if choice is not None:
        kwargs["tool_choice"] = _tool_choice(choice)
    text = body.get("text")
    if text is not None:
        fmt = _format(text)
        if fmt is not None:
            kwargs["response_format"] = fmt
    return kwargs


def _echo(body: Mapping[str, Any]) -> dict[str, Any]:
    """The settings the response repeats back (:data:`ECHOED`, with their defaults), and the reasoning effort."""
    echo = {key: body.get(key, default) for key, default in ECHOED.items()}
    if echo["metadata"] is None:
        echo["metadata"] = {}
    echo["reasoning"] = {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None}
    return echo


def input_messages(items: Any) -> list[dict[str, Any]]:
    """``input`` (a string or items) → OpenAI chat messages; consecutive function calls join one assistant turn."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise bad("input", "Invalid type for 'input': expected a string or an array of input items.")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        at = f"input[{i}]"
        if not isinstance(item, Mapping):
            raise bad(at, f"Invalid type for '{at}': expected an object.")
        kind = item.get("type", "message")
        if kind == "message":
            out.append(_message(item, at))
        elif kind == "function_call":
            call = {
                "id": _str(item.get("call_id"), f"{at}.call_id"),
                "type": "function",
                "function": {"name": _str(item.get("name"), f"{at}.name"), "arguments": item.get("arguments") or ""},
            }
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            elif last is not None and last["role"] == "assistant":
                last["tool_calls"] = [call]
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):
                output = "".join(_text_part(p, f"{at}.output[{j}]") for j, p in enumerate(output))
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": _str(item.get("call_id"), f"{at}.call_id"),
                    "content": _str(output, f"{at}.output"),
                }
            )
        else:
            raise bad(f"{at}.type", f"Input items of type {kind!r} are not supported by this gateway.")
    if not out:
        raise bad("input", "'input' must not be empty.")
    return out


def _text_part(part: Any, at: str) -> str:
    if isinstance(part, Mapping) and part.get("type") in ("input_text", "output_text", "text"):
        return _str(part.get("text"), f"{at}.text")
    raise bad(f"{at}.type", f"Only text parts are supported here, got {part!r:.60}.")


def _message(item: Mapping[str, Any], at: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise bad(f"{at}.role", f"Invalid value for '{at}.role': {role!r}.")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise bad(f"{at}.content", f"Invalid type for '{at}.content': expected a string or an array of parts.")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        where = f"{at}.content[{j}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": _str(part.get("text"), f"{where}.text")})
        elif kind == "refusal":
            parts.append({"type": "text", "text": _str(part.get("refusal"), f"{where}.refusal")})
        elif kind == "input_image" and role == "user":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise bad(f"{where}.image_url", "Only images given by 'image_url' (a URL or data URL) are supported.")
            image: dict[str, Any] = {"url": url}
            if part.get("detail") not in (None, "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise bad(f"{where}.type", f"Content parts of type {kind!r} are not supported here.")
    if all(p["type"] == "text" for p in parts):
        return {"role": role, "content": "".join(p["text"] for p in parts)}
    return {"role": role, "content": parts}


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise bad("tools", "Invalid type for 'tools': expected an array.")
    out = []
    for i, tool in enumerate(tools):
        at = f"tools[{i}]"
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, Mapping) else None
            raise bad(f"{at}.type", f"Tools of type {kind!r} are not supported by this gateway (only 'function').")
        fn: dict[str, Any] = {"name": _str(tool.get("name"), f"{at}.name")}
        if tool.get("description") is not None:
            fn["description"] = _str(tool["description"], f"{at}.description")
        if tool.get("parameters") is not None:
            fn["parameters"] = tool["parameters"]
        if tool.get("strict") is not None:
            fn["strict"] = tool["strict"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": _str(choice.get("name"), "tool_choice.name")}}
    raise bad("tool_choice", f"Unsupported tool_choice {choice!r}: use 'auto', 'none', 'required' or a function.")


def _format(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, Mapping):
        raise bad("text", "Invalid type for 'text': expected an object.")
    for key in text:
        if key not in ("format", "verbosity"):
            raise bad(f"text.{key}", f"Unsupported parameter: 'text.{key}'.")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("schema"), Mapping):
            raise bad("text.format.schema", "Missing required parameter: 'text.format.schema'.")
        spec = {"name": _str(fmt.get("name"), "text.format.name"), "schema": fmt["schema"]}
        if fmt.get("strict") is not None:
            spec["strict"] = fmt["strict"]
        if fmt.get("description") is not None:
            spec["description"] = fmt["description"]
        return {"type": "json_schema", "json_schema": spec}
    raise bad("text.format.type", f"Invalid value for 'text.format.type': {kind!r}.")
