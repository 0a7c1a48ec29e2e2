"""OpenAI Responses ⇄ polychat's normalised (Chat Completions-shaped) request and answers, both ways, pure.

Wire facts (https://platform.openai.com/docs/api-reference/responses, .../responses-streaming):

* request: ``model``, ``input`` (a string, or items: messages with ``input_text`` / ``input_image`` /
  ``output_text`` parts, ``function_call``, ``function_call_output``), ``instructions`` (a system message first),
  ``tools`` (``{"type": "function", "name", "description", "parameters", "strict"}``), ``tool_choice``,
  ``text.format`` (``text``, ``json_object``, ``json_schema`` with ``name``/``schema``/``strict``),
  ``max_output_tokens``, ``temperature``, ``top_p``, ``parallel_tool_calls``, ``reasoning.effort``, ``metadata``,
  ``user``, ``stream``;
* answer: ``{"id": "resp_…", "object": "response", "created_at", "status", "model", "output": [items],
  "usage": {"input_tokens", "input_tokens_details": {"cached_tokens"}, "output_tokens",
  "output_tokens_details": {"reasoning_tokens"}, "total_tokens"}, ...}`` with the request's settings echoed;
  items are ``message`` (``output_text`` parts) and ``function_call`` (``call_id``, ``name``, ``arguments``);
* stream: ``response.created``, ``response.in_progress``, ``response.output_item.added``,
  ``response.content_part.added``, ``response.output_text.delta`` / ``.done``, ``response.content_part.done``,
  ``response.function_call_arguments.delta`` / ``.done``, ``response.output_item.done``, then
  ``response.completed`` (``response.incomplete`` when ``max_output_tokens`` cut it); each event carries a
  ``sequence_number``; a failure after the stream started is ``error`` then ``response.failed``.

polychat keeps no state: ``store`` true and ``previous_response_id`` are refused with a 400 that says so (``store``
left out means false here, not OpenAI's true). Built-in tools (web search, file search, computer use...),
``background``, ``conversation`` and prompt templates are refused by name, like any field this code does not know.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from .._json import dumps
from ..errors import InvalidRequestError
from ..types import ChatCompletion, ChatCompletionChunk, CompletionUsage

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


def _bad(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _str(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _bad(param, f"Invalid type for '{param}': expected a string, but got {type(value).__name__}.")
    return value


class ResponsesCall:
    """A Responses request as polychat's call, and what the answer echoes."""

    __slots__ = ("echo", "kwargs", "messages", "model", "stream")

    def __init__(
        self, model: str, messages: list[dict[str, Any]], stream: bool, kwargs: dict[str, Any], echo: dict[str, Any]
    ) -> None:
        self.model = model
        self.messages = messages
        self.stream = stream
        self.kwargs = kwargs
        self.echo = echo


def to_chat(body: Mapping[str, Any]) -> ResponsesCall:
    """Validate a Responses request body and translate it; raises :class:`InvalidRequestError` naming the field."""
    for key in body:
        if key not in _ACCEPTED:
            raise _bad(key, f"Unsupported parameter: '{key}' is not supported by this gateway.")
    if body.get("store") is True:
        raise _bad("store", _STATELESS.format(what="'store': true"))
    if body.get("previous_response_id") is not None:
        raise _bad("previous_response_id", _STATELESS.format(what="'previous_response_id'"))
    if "model" not in body:
        raise _bad("model", "Missing required parameter: 'model'.")
    model = _str(body["model"], "model")
    if "input" not in body:
        raise _bad("input", "Missing required parameter: 'input'.")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise _bad("stream", "Invalid type for 'stream': expected a boolean.")
    for value in body.get("include") or ():
        if value not in _INCLUDABLE:
            raise _bad("include", f"Unsupported include value {value!r}: this gateway cannot provide it.")
    if body.get("truncation") not in (None, "disabled"):
        raise _bad("truncation", "Only 'truncation': 'disabled' is supported: the gateway does not cut the input.")

    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        messages.append({"role": "system", "content": _str(instructions, "instructions")})
    messages.extend(input_messages(body["input"]))

    kwargs: dict[str, Any] = {}
    for ours, theirs in (
        ("max_tokens", "max_output_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("parallel_tool_calls", "parallel_tool_calls"),
        ("user", "user"),
        ("metadata", "metadata"),
        ("service_tier", "service_tier"),
        ("safety_identifier", "safety_identifier"),
        ("prompt_cache_key", "prompt_cache_key"),
    ):
        if body.get(theirs) is not None:
            kwargs[ours] = body[theirs]
    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, Mapping):
            raise _bad("reasoning", "Invalid type for 'reasoning': expected an object.")
        if reasoning.get("effort") is not None:
            kwargs["reasoning_effort"] = reasoning["effort"]
        if reasoning.get("summary") not in (None, "auto", "none"):
            raise _bad("reasoning.summary", "Reasoning summaries are not available through this gateway.")
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
    if stream:
        kwargs["stream_options"] = {"include_usage": True}
    echo = {key: body.get(key, default) for key, default in ECHOED.items()}
    if echo["metadata"] is None:
        echo["metadata"] = {}
    echo["reasoning"] = {"effort": (reasoning or {}).get("effort"), "summary": None}
    return ResponsesCall(model, messages, stream, kwargs, echo)


def input_messages(items: Any) -> list[dict[str, Any]]:
    """``input`` (a string or items) → OpenAI chat messages; consecutive function calls join one assistant turn."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise _bad("input", "Invalid type for 'input': expected a string or an array of input items.")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        at = f"input[{i}]"
        if not isinstance(item, Mapping):
            raise _bad(at, f"Invalid type for '{at}': expected an object.")
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
            raise _bad(f"{at}.type", f"Input items of type {kind!r} are not supported by this gateway.")
    if not out:
        raise _bad("input", "'input' must not be empty.")
    return out


def _text_part(part: Any, at: str) -> str:
    if isinstance(part, Mapping) and part.get("type") in ("input_text", "output_text", "text"):
        return _str(part.get("text"), f"{at}.text")
    raise _bad(f"{at}.type", f"Only text parts are supported here, got {part!r:.60}.")


def _message(item: Mapping[str, Any], at: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise _bad(f"{at}.role", f"Invalid value for '{at}.role': {role!r}.")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _bad(f"{at}.content", f"Invalid type for '{at}.content': expected a string or an array of parts.")
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
                raise _bad(f"{where}.image_url", "Only images given by 'image_url' (a URL or data URL) are supported.")
            image: dict[str, Any] = {"url": url}
            if part.get("detail") not in (None, "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise _bad(f"{where}.type", f"Content parts of type {kind!r} are not supported here.")
    if all(p["type"] == "text" for p in parts):
        return {"role": role, "content": "".join(p["text"] for p in parts)}
    return {"role": role, "content": parts}


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools", "Invalid type for 'tools': expected an array.")
    out = []
    for i, tool in enumerate(tools):
        at = f"tools[{i}]"
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, Mapping) else None
            raise _bad(f"{at}.type", f"Tools of type {kind!r} are not supported by this gateway (only 'function').")
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
    raise _bad("tool_choice", f"Unsupported tool_choice {choice!r}: use 'auto', 'none', 'required' or a function.")


def _format(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, Mapping):
        raise _bad("text", "Invalid type for 'text': expected an object.")
    for key in text:
        if key not in ("format", "verbosity"):
            raise _bad(f"text.{key}", f"Unsupported parameter: 'text.{key}'.")
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
            raise _bad("text.format.schema", "Missing required parameter: 'text.format.schema'.")
        spec = {"name": _str(fmt.get("name"), "text.format.name"), "schema": fmt["schema"]}
        if fmt.get("strict") is not None:
            spec["strict"] = fmt["strict"]
        if fmt.get("description") is not None:
            spec["description"] = fmt["description"]
        return {"type": "json_schema", "json_schema": spec}
    raise _bad("text.format.type", f"Invalid value for 'text.format.type': {kind!r}.")


# -- answers ------------------------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return prefix + "_" + uuid.uuid4().hex


def usage_of(u: CompletionUsage | None) -> dict[str, Any] | None:
    if u is None:
        return None
    cached = (u.prompt_tokens_details.cached_tokens or 0) if u.prompt_tokens_details else 0
    reasoning = (u.completion_tokens_details.reasoning_tokens or 0) if u.completion_tokens_details else 0
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = (
        [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status == "completed" else []
    )
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def response_object(
    response_id: str,
    created_at: int,
    model: str,
    echo: Mapping[str, Any],
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    error: dict[str, Any] | None = None,
    incomplete: str | None = None,
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "model": model,
        "output": output,
        "store": False,
        **echo,
        "usage": usage,
    }


def to_response(completion: ChatCompletion, model: str, echo: Mapping[str, Any]) -> dict[str, Any]:
    """A completion as a Responses answer."""
    output: list[dict[str, Any]] = []
    finish = None
    if completion.choices:
        choice = completion.choices[0]
        finish = choice.finish_reason
        if choice.message.content:
            output.append(message_item(new_id("msg"), choice.message.content))
        for call in choice.message.tool_calls or ():
            output.append(call_item(new_id("fc"), call.id, call.function.name, call.function.arguments))
    incomplete = "max_output_tokens" if finish == "length" else "content_filter" if finish == "content_filter" else None
    return response_object(
        new_id("resp"),
        completion.created or int(time.time()),
        completion.model or model,
        echo,
        status="incomplete" if incomplete else "completed",
        output=output,
        usage=usage_of(completion.usage),
        incomplete=incomplete,
    )


#: One stream event, as its JSON object (``type``, ``sequence_number``, ...).
Event = dict[str, Any]


def sse(events: list[Event]) -> bytes:
    """Events as server-sent events (``event: TYPE`` + ``data: JSON``)."""
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + dumps(e) + b"\n\n" for e in events)


class ResponseStream:
    """One answer's chunks → Responses stream events, ``sequence_number`` counting from 0. The objects are built
    as the answer goes and may change afterwards: encode or convert them at once."""

    def __init__(self, model: str, echo: Mapping[str, Any]) -> None:
        self.model = model
        self.echo = echo
        self.id = new_id("resp")
        self.created_at = int(time.time())
        self.seq = 0
        self.started = False
        self.output: list[dict[str, Any]] = []
        self.text: list[str] | None = None  # the open message item's text
        self.calls: dict[int, int] = {}  # chat tool-call index → output index
        self.open_call: int | None = None
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None

    def _event(self, out: list[Event], kind: str, **fields: Any) -> None:
        out.append({"type": kind, "sequence_number": self.seq, **fields})
        self.seq += 1

    def _response(self, status: str, **kw: Any) -> dict[str, Any]:
        output = self.output if status != "in_progress" else []
        return response_object(
            self.id, self.created_at, self.model, self.echo, status=status, output=list(output), usage=self.usage, **kw
        )

    def _start(self, out: list[Event]) -> None:
        if not self.started:
            self.started = True
            self._event(out, "response.created", response=self._response("in_progress"))
            self._event(out, "response.in_progress", response=self._response("in_progress"))

    def _close_text(self, out: list[Event]) -> None:
        if self.text is None:
            return
        index = len(self.output) - 1
        item = self.output[index]
        text = "".join(self.text)
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        ids = {"item_id": item["id"], "output_index": index, "content_index": 0}
        self._event(out, "response.output_text.done", **ids, text=text, logprobs=[])
        self._event(out, "response.content_part.done", **ids, part=part)
        self.output[index] = message_item(item["id"], text)
        self._event(out, "response.output_item.done", output_index=index, item=self.output[index])
        self.text = None

    def _close_call(self, out: list[Event]) -> None:
        if self.open_call is None:
            return
        index, self.open_call = self.open_call, None
        item = self.output[index]
        item["status"] = "completed"
        self._event(
            out,
            "response.function_call_arguments.done",
            item_id=item["id"],
            output_index=index,
            arguments=item["arguments"],
        )
        self._event(out, "response.output_item.done", output_index=index, item=item)

    def chunk(self, chunk: ChatCompletionChunk) -> list[Event]:
        out: list[Event] = []
        self._start(out)
        if chunk.model and self.model != chunk.model and not self.output:
            self.model = chunk.model
        if chunk.usage is not None:
            self.usage = usage_of(chunk.usage)
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta.content:
                if self.text is None:
                    self._close_call(out)
                    item = message_item(new_id("msg"), "", status="in_progress")
                    self.output.append(item)
                    self.text = []
                    index = len(self.output) - 1
                    self._event(out, "response.output_item.added", output_index=index, item=item)
                    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                    ids = {"item_id": item["id"], "output_index": index, "content_index": 0}
                    self._event(out, "response.content_part.added", **ids, part=part)
                index = len(self.output) - 1
                self.text.append(delta.content)
                ids = {"item_id": self.output[index]["id"], "output_index": index, "content_index": 0}
                self._event(out, "response.output_text.delta", **ids, delta=delta.content, logprobs=[])
            for call in delta.tool_calls or ():
                fn = call.function
                found = self.calls.get(call.index)
                if found is None:
                    self._close_text(out)
                    self._close_call(out)
                    item = call_item(
                        new_id("fc"), call.id or new_id("call"), (fn.name if fn else "") or "", "", "in_progress"
                    )
                    self.output.append(item)
                    found = self.calls[call.index] = self.open_call = len(self.output) - 1
                    self._event(out, "response.output_item.added", output_index=found, item=dict(item))
                if fn is not None and fn.arguments:
                    index = found
                    item = self.output[index]
                    item["arguments"] += fn.arguments
                    self._event(
                        out,
                        "response.function_call_arguments.delta",
                        item_id=item["id"],
                        output_index=index,
                        delta=fn.arguments,
                    )
            if choice.finish_reason:
                self.finish = choice.finish_reason
        return out

    def end(self) -> list[Event]:
        out: list[Event] = []
        self._start(out)
        self._close_text(out)
        self._close_call(out)
        if self.finish in ("length", "content_filter"):
            reason = "max_output_tokens" if self.finish == "length" else "content_filter"
            self._event(out, "response.incomplete", response=self._response("incomplete", incomplete=reason))
        else:
            self._event(out, "response.completed", response=self._response("completed"))
        return out

    def failed(self, status: int, message: str, code: str | None) -> list[Event]:
        """``error`` and ``response.failed`` for a failure after the stream started."""
        out: list[Event] = []
        self._start(out)
        if self.text is not None:  # what was said before the failure stays in the failed response
            index = len(self.output) - 1
            self.output[index] = {**message_item(self.output[index]["id"], "".join(self.text)), "status": "incomplete"}
            self.text = None
        code = code or ("rate_limit_exceeded" if status == 429 else "server_error")
        self._event(out, "error", code=code, message=message, param=None)
        error = {"code": code, "message": message}
        self._event(out, "response.failed", response=self._response("failed", error=error))
        return out
