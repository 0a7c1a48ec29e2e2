"""The answer half of :mod:`polychat.protocols.responses`: a completion or a stream of chunks as a Responses
answer and its stream events (``sequence_number`` counting from 0).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..types import ChatCompletion, ChatCompletionChunk, CompletionUsage
from ._common import answer_choices, new_id, sse_event


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
    return b"".join(sse_event(e["type"], e) for e in events)


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
        for choice in answer_choices(chunk):
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
