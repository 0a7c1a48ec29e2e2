"""Ollama: the native ``/api/chat`` endpoint (NDJSON streaming), answers in OpenAI's shape.

Wire facts (https://github.com/ollama/ollama/blob/main/docs/api.md, "Generate a chat completion"):

* ``base_url`` is the server root: ``OLLAMA_HOST`` (``host:port`` or a URL) or ``http://localhost:11434``; no key
  is needed locally, ``OLLAMA_API_KEY`` (or ``api_key=``) is sent as a bearer token for servers that want one;
* ``stream`` is always sent explicitly (Ollama streams unless told ``false``); a stream is one JSON object per
  line, the last with ``done: true``, ``done_reason`` and the counts ``prompt_eval_count`` / ``eval_count``;
* sampling settings go in ``options`` (``temperature``, ``top_p``, ``seed``, ``stop``, ``num_predict`` for
  ``max_tokens``, ``presence_penalty``, ``frequency_penalty``); ``extra_body={"options": {...}}`` adds Ollama's own
  (``num_ctx``, ``top_k``...), other ``extra_body`` keys (``keep_alive``, ``think``) go at the top level;
* images are base64 strings in the message's ``images`` (``data:`` URLs are unpacked; remote URLs are refused —
  the server does not fetch them);
* tool-call arguments are JSON objects, not strings (converted both ways); tool results are ``role: tool``
  messages with ``tool_name``; calls arrive whole and without ids, so polychat makes them;
* ``tool_choice`` has no Ollama counterpart: ``"auto"`` is the default behaviour and ``"none"`` is honoured by not
  sending the tools; ``"required"`` or a named function is refused (or dropped with ``drop_unsupported=True``);
* JSON mode is native: ``format: "json"`` for ``json_object``, ``format: <schema>`` for ``json_schema``;
* errors are ``{"error": "message"}`` with an HTTP status, or an ``error`` line inside a 200 stream.
"""

from __future__ import annotations

import os
import time
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
    NDJSONFrameParser,
    accepted_params,
    content_parts,
    function_specs,
    json_mode,
    new_call_id,
    new_completion_id,
    only,
    text_content,
    tool_calls_of,
    tool_delta,
    tool_names,
    unsupported,
    usage,
)
from .base import Capabilities
from .http import HTTPProvider

if TYPE_CHECKING:
    from .._request import ChatRequest

DEFAULT_BASE_URL = "http://localhost:11434"

FINISH_REASONS = {"stop": "stop", "length": "length", "load": "stop", "unload": "stop"}

_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "max_tokens": "num_predict",
    "max_completion_tokens": "num_predict",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
_RULES = {
    **NO_OP,
    **dict.fromkeys(_OPTIONS),
    "stop": None,
    "tools": None,
    "tool_choice": only("auto", "none"),
    "parallel_tool_calls": only(True),
    "response_format": None,
    "stream_options": None,
}


def host_url(value: str) -> str:
    """``OLLAMA_HOST`` as a base URL: a scheme and the default port are added when missing."""
    value = value.strip().rstrip("/")
    if "://" not in value:
        value = "http://" + value
    scheme, _, rest = value.partition("://")
    hostport = rest.split("/", 1)[0]
    if ":" not in hostport.rsplit("]", 1)[-1]:
        value = f"{scheme}://{hostport}:11434" + rest[len(hostport) :]
    return value


def convert_messages(messages: list[dict[str, Any]], provider: str) -> list[dict[str, Any]]:
    """OpenAI messages → Ollama messages."""
    out: list[dict[str, Any]] = []
    names = tool_names(messages)
    for i, msg in enumerate(messages):
        role, where, content = msg["role"], f"messages[{i}]", msg.get("content")
        if role == "function":
            raise unsupported(f"{where}.role", "'function' (the legacy role) is not supported; use tools", provider)
        if role in ("system", "developer", "tool"):
            item: dict[str, Any] = {"role": "system" if role == "developer" else role}
            item["content"] = text_content(content, where, provider)
            if role == "tool" and names.get(msg["tool_call_id"]):
                item["tool_name"] = names[msg["tool_call_id"]]
            out.append(item)
            continue
        text: list[str] = []
        images: list[str] = []
        for piece in content_parts(content, where, provider):
            if isinstance(piece, Image):
                if piece.data is None:
                    raise unsupported(
                        f"{where}.content", "with an image URL is not supported (Ollama takes data: URLs)", provider
                    )
                images.append(piece.data)
            else:
                text.append(piece)
        item = {"role": role, "content": "".join(text)}
        if images:
            item["images"] = images
        calls = tool_calls_of(msg, where) if role == "assistant" else []
        if calls:
            item["tool_calls"] = [{"function": {"name": name, "arguments": args}} for _, name, args in calls]
        out.append(item)
    return out


def _calls(message: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        args = fn.get("arguments")
        out.append(
            (
                str(call.get("id") or new_call_id()),
                str(fn.get("name", "")),
                args if isinstance(args, str) else dumps(args or {}).decode(),
            )
        )
    return out


def _finish(data: dict[str, Any], has_calls: bool) -> str:
    finish = FINISH_REASONS.get(str(data.get("done_reason") or "stop"), "stop")
    return "tool_calls" if has_calls and finish == "stop" else finish


class OllamaStreamParser(NDJSONFrameParser):
    """Ollama NDJSON lines → OpenAI chunks."""

    def __init__(self, provider: str, model: str, *, include_usage: bool) -> None:
        super().__init__(provider)
        self.chunks = ChunkMaker(provider, model, include_usage=include_usage)
        self._started = False
        self._calls = 0

    def _frame(self, line: bytes, out: list[ChatCompletionChunk]) -> None:
        try:
            data = loads(line)
        except Exception as e:
            raise self.malformed(line, e) from e
        if not isinstance(data, dict):
            raise self.malformed(line)
        if data.get("error") is not None:
            raise error_frame(data, self.provider)
        self.chunks.model = data.get("model") or self.chunks.model
        make = self.chunks.make
        if not self._started:
            self._started = True
            out.append(make(ChoiceDelta(role="assistant", content="")))
        message = data.get("message") or {}
        if message.get("content"):
            out.append(make(ChoiceDelta(content=message["content"])))
        for cid, name, args in _calls(message):
            out.append(make(ChoiceDelta(tool_calls=[tool_delta(self._calls, cid, name, args)])))
            self._calls += 1
        if data.get("done"):
            use = usage(data.get("prompt_eval_count"), data.get("eval_count"))
            self.chunks.end(out, _finish(data, self._calls > 0), use)
            self.finished = True


class Ollama(HTTPProvider):
    """An Ollama server through its native API. ``base_url`` defaults to ``OLLAMA_HOST``, then
    ``http://localhost:11434``; ``api_key`` (default ``OLLAMA_API_KEY``) is optional."""

    capabilities = Capabilities(streaming=True, tools=True, vision=True, json_mode=True, system_role=True)
    key_name = "ollama"
    api_key_envs = ("OLLAMA_API_KEY",)
    base_url_env = "OLLAMA_HOST"
    default_base_url = DEFAULT_BASE_URL
    key_required = False  # a local server; the key is for servers that want one

    @classmethod
    def env_base_url(cls) -> str | None:
        host = os.environ.get(cls.base_url_env)
        return host_url(host) if host else None

    def chat_request(self, request: ChatRequest, *, stream: bool) -> WireRequest:
        params = accepted_params(request.params, _RULES, provider=self.name, drop=request.drop_unsupported)
        body: dict[str, Any] = {
            "model": self.resolve_model(request.model),
            "messages": convert_messages(request.messages, self.name),
            "stream": stream,
        }
        options = {_OPTIONS[k]: v for k, v in params.items() if k in _OPTIONS}
        if "stop" in params:
            options["stop"] = [params["stop"]] if isinstance(params["stop"], str) else list(params["stop"])
        extra = dict(request.extra_body)
        if isinstance(extra.get("options"), dict):
            options.update(extra.pop("options"))
        if options:
            body["options"] = options
        specs = function_specs(params.get("tools"), self.name)
        if specs and params.get("tool_choice") != "none":
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": f.name,
                        "description": f.description or "",
                        "parameters": f.parameters or {"type": "object", "properties": {}},
                    },
                }
                for f in specs
            ]
        mode = json_mode(params.get("response_format"))
        if mode is not None:
            body["format"] = mode.schema if mode.schema is not None else "json"
        body.update(extra)
        headers = {**self._base_headers, "accept": "application/x-ndjson" if stream else "application/json"}
        headers.update(request.extra_headers)
        return WireRequest("POST", f"{self.base_url}/api/chat", headers, dumps(body), request.extra_query or None)

    def parse_completion(self, body: bytes, request: ChatRequest) -> ChatCompletion:
        data = loads_or_text(body)
        if isinstance(data, dict) and data.get("error") is not None:
            raise error_frame(data, self.name)
        if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
            raise APIConnectionError(f"Malformed response from the provider: {body[:200]!r}", provider=self.name)
        calls = [ChatCompletionMessageToolCall(id=c, function=Function(n, a)) for c, n, a in _calls(data["message"])]
        content = data["message"].get("content") or ""
        message = ChatCompletionMessage(content=content if content or not calls else None, tool_calls=calls or None)
        return ChatCompletion(
            id=new_completion_id(),
            created=int(time.time()),
            model=data.get("model") or request.model,
            choices=[Choice(index=0, message=message, finish_reason=_finish(data, bool(calls)))],
            usage=usage(data.get("prompt_eval_count"), data.get("eval_count")),
        )

    def stream_parser(self, request: ChatRequest) -> OllamaStreamParser:
        include = bool((request.params.get("stream_options") or {}).get("include_usage"))
        return OllamaStreamParser(self.name, request.model or self.default_model or "", include_usage=include)

    def models_request(self) -> WireRequest:
        headers = {k: v for k, v in self._base_headers.items() if k != "content-type"}
        return WireRequest("GET", f"{self.base_url}/api/tags", headers)

    def parse_models(self, body: bytes) -> list[Model]:
        data = loads_or_text(body)
        if not isinstance(data, dict) or not isinstance(data.get("models", []), list):
            raise APIConnectionError(f"Malformed models list: {str(data)[:200]}", provider=self.name)
        return [Model(id=str(m.get("name") or m.get("model")), owned_by="ollama") for m in data.get("models", [])]
