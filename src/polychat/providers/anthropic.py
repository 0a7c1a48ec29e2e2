"""Anthropic: Claude's Messages API (``POST /v1/messages``) spoken natively, answers in OpenAI's shape.

Wire facts (https://docs.anthropic.com/en/api/messages, .../messages-streaming, .../errors):

* headers ``x-api-key`` and ``anthropic-version: 2023-06-01``; ``base_url`` is the API root (as the official SDK's
  ``ANTHROPIC_BASE_URL``), ``/v1/messages`` is appended;
* ``system`` and ``developer`` messages are lifted to the top-level ``system`` prompt (joined by a blank line, in
  order — Anthropic has no mid-conversation system turns); consecutive turns of one role are merged;
* ``max_tokens`` is required by Anthropic: when the caller sets neither ``max_tokens`` nor
  ``max_completion_tokens``, :data:`DEFAULT_MAX_TOKENS` (4096, or the instance's ``max_tokens=``) is sent;
* tools become ``tools[{name, description, input_schema}]``, tool calls ``tool_use`` blocks, tool results
  ``tool_result`` blocks in a user turn; ``tool_choice`` maps to auto / any / tool / none and
  ``parallel_tool_calls=False`` to ``disable_parallel_tool_use``; tool-call ids outside Anthropic's alphabet
  (``[A-Za-z0-9_-]``) are replaced by a stable stand-in on the way out;
* JSON mode has no native switch: ``response_format`` becomes a forced tool :data:`JSON_TOOL` whose input schema is
  the requested schema (Anthropic's documented way to get JSON), and its input comes back as the message content
  with ``finish_reason="stop"``; when the caller also passes tools (or the schema is not an object), the fallback is
  an instruction in the system prompt;
* a last assistant message is continued (prefill); its trailing whitespace is removed, as Anthropic requires;
* stream events: ``message_start``, ``content_block_start/delta/stop`` (``text_delta``, ``input_json_delta``),
  ``message_delta`` (``stop_reason``, usage), ``message_stop``; ``ping`` is ignored, an ``error`` event after
  the 200 is raised as the matching error (``overloaded_error`` → 529, retryable), unknown events are skipped;
* ``temperature`` above 1, ``seed``, penalties, ``logit_bias``, ``n`` > 1 and the like cannot be honoured: they
  are refused before sending unless the call says ``drop_unsupported=True``.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .._http import WireRequest
from .._json import dumps, loads, loads_or_text
from ..errors import APIConnectionError, error_frame
from ..types import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageToolCall,
    Choice,
    ChoiceDelta,
    Function,
    Model,
)
from ._convert import (
    NO_OP,
    ChunkMaker,
    Image,
    SSEFrameParser,
    accepted_params,
    at_most,
    content_parts,
    function_specs,
    json_instruction,
    json_mode,
    new_call_id,
    new_completion_id,
    safe_id,
    text_content,
    tool_calls_of,
    tool_choice_of,
    tool_delta,
    unsupported,
    usage,
)
from .base import Capabilities
from .http import HTTPProvider, HTTPProviderOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .._context import CallContext
    from .._request import ChatRequest
    from .._sse import ServerSentEvent

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_BASE_URL = "https://api.anthropic.com"
#: Sent as ``max_tokens`` when the caller gives no limit (Anthropic requires one).
DEFAULT_MAX_TOKENS = 4096
#: The forced tool that carries a JSON-mode answer.
JSON_TOOL = "json_response"

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_RULES = {
    **NO_OP,
    "max_tokens": None,
    "max_completion_tokens": None,
    "temperature": at_most(1, "Anthropic"),
    "top_p": None,
    "stop": None,
    "tools": None,
    "tool_choice": None,
    "parallel_tool_calls": None,
    "response_format": None,
    "stream_options": None,
}


def _blocks(content: Any, where: str, provider: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for piece in content_parts(content, where, provider):
        if isinstance(piece, Image):
            source = (
                {"type": "url", "url": piece.url}
                if piece.url
                else {"type": "base64", "media_type": piece.media_type, "data": piece.data}
            )
            out.append({"type": "image", "source": source})
        elif piece:
            out.append({"type": "text", "text": piece})
    return out


def convert_messages(messages: list[dict[str, Any]], provider: str) -> tuple[list[str], list[dict[str, Any]]]:
    """OpenAI messages → (system prompt pieces, Anthropic messages)."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    last = len(messages) - 1
    for i, msg in enumerate(messages):
        role, where, content = msg["role"], f"messages[{i}]", msg.get("content")
        if role in ("system", "developer"):
            system.append(text_content(content, where, provider))
            continue
        if role == "function":
            raise unsupported(f"{where}.role", "'function' (the legacy role) is not supported; use tools", provider)
        item: dict[str, Any]
        if role == "tool":
            result = {"type": "tool_result", "tool_use_id": safe_id(msg["tool_call_id"])}
            result["content"] = text_content(content, where, provider)
            item = {"role": "user", "content": [result]}
        else:
            calls = tool_calls_of(msg, where) if role == "assistant" else []
            if role == "assistant" and i == last and isinstance(content, str):
                content = content.rstrip()
            if isinstance(content, str) and not calls:
                item = {"role": role, "content": content}
            else:
                blocks = _blocks(content, where, provider)
                for call_id, name, args in calls:
                    blocks.append(
                        {"type": "tool_use", "id": safe_id(call_id or new_call_id()), "name": name, "input": args}
                    )
                item = {"role": role, "content": blocks}
        if out and out[-1]["role"] == item["role"]:
            prev = out[-1]
            for it in (prev, item):
                if isinstance(it["content"], str):
                    it["content"] = [{"type": "text", "text": it["content"]}] if it["content"] else []
            prev["content"].extend(item["content"])
        else:
            out.append(item)
    return system, out


def _json_tool_schema(request: ChatRequest) -> dict[str, Any] | None:
    """The input schema of the forced JSON tool, or None when JSON mode (if any) uses the instruction fallback."""
    mode = json_mode(request.params.get("response_format"))
    if mode is None or request.params.get("tools"):
        return None
    schema = mode.schema or {"type": "object"}
    return schema if schema.get("type") == "object" else None


def _epoch(stamp: Any) -> int:
    try:
        return int(datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


class AnthropicStreamParser(SSEFrameParser):
    """Anthropic stream events → OpenAI chunks."""

    def __init__(
        self, provider: str, model: str, *, json_tool: bool, include_usage: bool, native: bool = False
    ) -> None:
        super().__init__(provider)
        #: Keep each upstream event on the chunks made from it (``chunk.native``), so the gateway's /v1/messages
        #: forwards it as it came; an event that makes no chunk gets an empty carrier chunk.
        self._native = native
        self.chunks = ChunkMaker(provider, model, include_usage=include_usage)
        self._json_tool = json_tool
        self._json_blocks: set[int] = set()
        self._tools: dict[int, int] = {}
        self._input = self._cached = self._output = 0

    def _frame(self, ev: ServerSentEvent, out: list[ChatCompletionChunk]) -> None:
        if not ev.data.strip():
            return
        try:
            payload = loads(ev.data)
        except Exception as e:
            raise self.malformed(ev.data, e) from e
        kind = payload.get("type") if isinstance(payload, dict) else None
        if ev.event == "error" or kind == "error":
            raise error_frame(payload if isinstance(payload, dict) else {"error": payload}, self.provider)
        if not isinstance(payload, dict):
            raise self.malformed(ev.data)
        if not self._native:
            self._translate(payload, kind, out)
            return
        start = len(out)
        self._translate(payload, kind, out)
        if len(out) == start:
            carrier = ChatCompletionChunk(id=self.chunks.id, model=self.chunks.model, created=self.chunks.created)
            carrier.provider = self.provider
            out.append(carrier)
        out[start].native = payload
        for chunk in out[start + 1 :]:
            chunk.native = {}

    def _translate(self, payload: dict[str, Any], kind: Any, out: list[ChatCompletionChunk]) -> None:
        make = self.chunks.make
        if kind == "message_start":
            msg = payload.get("message") or {}
            self.chunks.id = msg.get("id") or self.chunks.id
            self.chunks.model = msg.get("model") or self.chunks.model
            self._usage(msg.get("usage"))
            out.append(make(ChoiceDelta(role="assistant", content="")))
        elif kind == "content_block_start":
            block, index = payload.get("content_block") or {}, payload.get("index", 0)
            if block.get("type") == "tool_use":
                if self._json_tool and block.get("name") == JSON_TOOL:
                    self._json_blocks.add(index)
                else:
                    self._tools[index] = n = len(self._tools)
                    out.append(make(ChoiceDelta(tool_calls=[tool_delta(n, block.get("id"), block.get("name"), "")])))
            elif block.get("type") == "text" and block.get("text"):
                out.append(make(ChoiceDelta(content=block["text"])))
        elif kind == "content_block_delta":
            delta, index = payload.get("delta") or {}, payload.get("index", 0)
            if delta.get("type") == "text_delta":
                out.append(make(ChoiceDelta(content=delta.get("text", ""))))
            elif delta.get("type") == "input_json_delta":
                part = delta.get("partial_json", "")
                if index in self._json_blocks:
                    out.append(make(ChoiceDelta(content=part)))
                elif index in self._tools and part:
                    out.append(make(ChoiceDelta(tool_calls=[tool_delta(self._tools[index], None, None, part)])))
        elif kind == "message_delta":
            self._usage(payload.get("usage"))
            stop = (payload.get("delta") or {}).get("stop_reason")
            if stop:
                self._end(out, stop)
        elif kind == "message_stop":
            self._end(out, "end_turn")

    def _usage(self, u: Any) -> None:
        if isinstance(u, dict):
            if u.get("input_tokens") is not None:
                self._cached = int(u.get("cache_read_input_tokens") or 0)
                self._input = int(u["input_tokens"]) + self._cached + int(u.get("cache_creation_input_tokens") or 0)
            if u.get("output_tokens") is not None:
                self._output = int(u["output_tokens"])

    def _end(self, out: list[ChatCompletionChunk], stop: str) -> None:
        finish = "stop" if self._json_blocks and stop == "tool_use" else FINISH_REASONS.get(stop, "stop")
        self.chunks.end(out, finish, usage(self._input, self._output, cached=self._cached))
        self.finished = True


class Anthropic(HTTPProvider):
    """Claude through Anthropic's Messages API. ``api_key`` defaults to ``ANTHROPIC_API_KEY``, ``base_url`` to
    ``ANTHROPIC_BASE_URL`` and then ``https://api.anthropic.com``; ``max_tokens`` is the limit sent when a call
    gives none."""

    capabilities = Capabilities(
        streaming=True,
        tools=True,
        vision=True,
        json_mode=True,
        system_role=True,
        prefill=True,
        native_protocol="anthropic",
    )
    key_name = "anthropic"
    api_key_envs = ("ANTHROPIC_API_KEY",)
    base_url_env = "ANTHROPIC_BASE_URL"
    default_base_url = DEFAULT_BASE_URL
    default_model: str | None = "claude-sonnet-4-5"

    def __init__(
        self,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        anthropic_version: str = ANTHROPIC_VERSION,
        **options: Unpack[HTTPProviderOptions],
    ) -> None:
        super().__init__(**options)
        self.max_tokens = max_tokens
        self._base_headers = {"anthropic-version": anthropic_version, **self._base_headers}

    def auth_headers(self) -> dict[str, str]:
        return {"x-api-key": self.api_key} if self.api_key else {}

    def chat_request(self, request: ChatRequest, *, stream: bool) -> WireRequest:
        native = request.native
        if native is not None and native.protocol == "anthropic":
            return self._native_request(request, native.body, native.headers, stream=stream)
        params = accepted_params(request.params, _RULES, provider=self.name, drop=request.drop_unsupported)
        system, messages = convert_messages(request.messages, self.name)
        body: dict[str, Any] = {
            "model": self.resolve_model(request.model),
            "max_tokens": params.get("max_tokens") or params.get("max_completion_tokens") or self.max_tokens,
        }
        specs = function_specs(params.get("tools"), self.name)
        tools = [
            {"name": f.name, "description": f.description, "input_schema": f.parameters or {"type": "object"}}
            for f in specs
        ]
        for tool in tools:
            if tool["description"] is None:
                del tool["description"]
        mode, forced = tool_choice_of(params.get("tool_choice")), None
        json_schema = _json_tool_schema(request) if "response_format" in params else None
        if json_schema is not None:
            tools = [{"name": JSON_TOOL, "description": "Reply with the requested JSON.", "input_schema": json_schema}]
            forced = {"type": "tool", "name": JSON_TOOL}
        elif (jm := json_mode(params.get("response_format"))) is not None:
            system.append(json_instruction(jm))
        if system:
            body["system"] = "\n\n".join(system)
        body["messages"] = messages
        if "stop" in params:
            body["stop_sequences"] = [params["stop"]] if isinstance(params["stop"], str) else list(params["stop"])
        for key in ("temperature", "top_p"):
            if key in params:
                body[key] = params[key]
        if "user" in params:
            body["metadata"] = {"user_id": params["user"]}
        if tools:
            body["tools"] = tools
        choice = forced if forced is not None else self._tool_choice(mode, params)
        if choice is not None and (tools or "tool_choice" in params):
            body["tool_choice"] = choice
        if stream:
            body["stream"] = True
        body.update(request.extra_body)
        headers = {**self._base_headers, "accept": "text/event-stream" if stream else "application/json"}
        headers.update(request.extra_headers)
        return WireRequest("POST", f"{self.base_url}/v1/messages", headers, dumps(body), request.extra_query or None)

    def _native_request(
        self, request: ChatRequest, body: dict[str, Any], client_headers: dict[str, str], *, stream: bool
    ) -> WireRequest:
        """The client's own Messages body (it came through the gateway's ``/v1/messages``), sent unchanged but for
        the model this provider was asked for and the stream switch."""
        wire_body = {**body, "model": self.resolve_model(request.model)}
        if stream:
            wire_body["stream"] = True
        else:
            wire_body.pop("stream", None)
        headers = {**self._base_headers, **client_headers}
        headers["accept"] = "text/event-stream" if stream else "application/json"
        headers.update(request.extra_headers)
        return WireRequest("POST", f"{self.base_url}/v1/messages", headers, dumps(wire_body), None)

    async def acount_tokens(
        self, body: dict[str, Any], model: str, client_headers: dict[str, str], ctx: CallContext
    ) -> int:
        """Anthropic's own count of a Messages body's input tokens (``POST /v1/messages/count_tokens``)."""
        self.check_ready()
        wire_body = {**body, "model": self.resolve_model(model)}
        headers = {**self._base_headers, **client_headers, "accept": "application/json"}
        url = f"{self.base_url}/v1/messages/count_tokens"
        data = loads_or_text(await self._asend(WireRequest("POST", url, headers, dumps(wire_body), None), ctx))
        if not isinstance(data, dict) or not isinstance(data.get("input_tokens"), int):
            raise APIConnectionError(f"Malformed token count from the provider: {str(data)[:200]}", provider=self.name)
        return int(data["input_tokens"])

    @staticmethod
    def _tool_choice(mode: tuple[str, str | None], params: dict[str, Any]) -> dict[str, Any] | None:
        kind, name = mode
        if kind == "auto" and "tool_choice" not in params and params.get("parallel_tool_calls") is not False:
            return None
        choice: dict[str, Any] = {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}.get(
            kind, {"type": "tool", "name": name}
        )
        if params.get("parallel_tool_calls") is False and kind != "none":
            choice["disable_parallel_tool_use"] = True
        return choice

    def parse_completion(self, body: bytes, request: ChatRequest) -> ChatCompletion:
        data = loads_or_text(body)
        if isinstance(data, dict) and (data.get("type") == "error" or "error" in data):
            raise error_frame(data, self.name)
        if not isinstance(data, dict) or not isinstance(data.get("content"), list):
            raise APIConnectionError(f"Malformed response from the provider: {body[:200]!r}", provider=self.name)
        json_tool = _json_tool_schema(request) is not None
        text: list[str] = []
        calls: list[ChatCompletionMessageToolCall] = []
        for block in data["content"]:
            if block.get("type") == "text":
                text.append(block.get("text", ""))
            elif block.get("type") == "tool_use":
                args = dumps(block.get("input") or {}).decode()
                if json_tool and block.get("name") == JSON_TOOL:
                    text.append(args)
                else:
                    calls.append(
                        ChatCompletionMessageToolCall(
                            id=block.get("id") or new_call_id(), function=Function(block.get("name", ""), args)
                        )
                    )
        stop = data.get("stop_reason") or "end_turn"
        finish = "stop" if json_tool and stop == "tool_use" and not calls else FINISH_REASONS.get(stop, "stop")
        u = data.get("usage") or {}
        cached = int(u.get("cache_read_input_tokens") or 0)
        prompt = int(u.get("input_tokens") or 0) + cached + int(u.get("cache_creation_input_tokens") or 0)
        message = ChatCompletionMessage(content="".join(text) if text or not calls else None, tool_calls=calls or None)
        completion = ChatCompletion(
            id=str(data.get("id") or new_completion_id()),
            created=int(time.time()),
            model=data.get("model", ""),
            choices=[Choice(index=0, message=message, finish_reason=finish)],
            usage=usage(prompt, u.get("output_tokens"), cached=cached),
        )
        if request.native is not None and request.native.protocol == "anthropic":
            completion.native = data
        return completion

    def stream_parser(self, request: ChatRequest) -> AnthropicStreamParser:
        include = bool((request.params.get("stream_options") or {}).get("include_usage"))
        model = request.model or self.default_model or ""
        native = request.native is not None and request.native.protocol == "anthropic"
        json_tool = not native and _json_tool_schema(request) is not None
        return AnthropicStreamParser(self.name, model, json_tool=json_tool, include_usage=include, native=native)

    def models_request(self) -> WireRequest:
        headers = {k: v for k, v in self._base_headers.items() if k != "content-type"}
        return WireRequest("GET", f"{self.base_url}/v1/models", headers, None, {"limit": 1000})

    def parse_models(self, body: bytes) -> list[Model]:
        data = loads_or_text(body)
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise APIConnectionError(f"Malformed models list: {str(data)[:200]}", provider=self.name)
        return [Model(id=m["id"], created=_epoch(m.get("created_at")), owned_by="anthropic") for m in data["data"]]
