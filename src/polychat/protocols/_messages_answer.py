"""The answer half of :mod:`polychat.protocols.anthropic_messages`: a completion or a stream of chunks as
Anthropic's answer, its stream events and its error bodies.
"""

from __future__ import annotations

from typing import Any

from .._json import loads
from ..types import ChatCompletion, ChatCompletionChunk, CompletionUsage
from ._common import answer_choices, new_id, sse_event

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


def message_id() -> str:
    return new_id("msg", 24)


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


#: One Anthropic stream event (``event: NAME``, ``data: JSON``).
event = sse_event


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
        for choice in answer_choices(chunk):
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
    return new_id("toolu", 24)
