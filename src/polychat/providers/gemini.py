"""Gemini: Google's Gemini API (``generateContent`` / ``streamGenerateContent?alt=sse``), answers in OpenAI's shape.

Wire facts (https://ai.google.dev/api/generate-content, .../api/caching#Content, .../gemini-api/docs/function-calling,
.../gemini-api/docs/structured-output, .../gemini-api/docs/thought-signatures):

* the key travels in the ``x-goog-api-key`` header, never in the URL; ``base_url`` includes the API version
  (default ``https://generativelanguage.googleapis.com/v1beta``);
* roles are ``user`` and ``model``; ``system`` / ``developer`` messages become ``systemInstruction``; sampling
  settings go in ``generationConfig`` (``temperature``, ``topP``, ``maxOutputTokens``, ``stopSequences``,
  ``candidateCount`` for ``n``, ``seed``, ``presencePenalty``, ``frequencyPenalty``);
* JSON mode is native: ``responseMimeType: application/json`` plus ``responseJsonSchema`` for ``json_schema``;
* tools become ``tools[{functionDeclarations: [{name, description, parametersJsonSchema}]}]``, ``tool_choice``
  becomes ``toolConfig.functionCallingConfig`` (AUTO / ANY / NONE, ``allowedFunctionNames``); tool results become
  ``functionResponse`` parts (the function name is looked up from the assistant's earlier tool call);
* function calls arrive whole (one chunk each, arguments complete) and usually without an id: polychat makes one.
  A call's ``thoughtSignature`` (which Gemini 3 requires back on the next turn) is carried inside that id after a
  ``.`` and restored when the call is replayed; calls without one (e.g. made by another provider) are replayed
  with Google's documented ``skip_thought_signature_validator`` value;
* every SSE frame is a whole ``GenerateContentResponse`` holding the new text; the frame with ``finishReason``
  ends the answer, ``usageMetadata`` gives the token counts; there is no ``[DONE]``;
* images go inline (``data:`` URLs → ``inlineData``) or as Files API / ``gs://`` URIs (``fileData``); other
  ``https:`` image URLs are refused before sending (the API does not fetch them; download and pass a data URL);
* errors are ``{"error": {"code", "message", "status"}}``; a 429's ``RetryInfo.retryDelay`` becomes ``retry_after``;
  a bad key (400 with reason ``API_KEY_INVALID``) is an ``AuthenticationError``, as a 401 would be.
"""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._http import WireRequest, retry_after_seconds
from .._json import dumps, loads, loads_or_text
from ..errors import APIConnectionError, APIError, InvalidRequestError, error_frame, status_error
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
    content_parts,
    function_specs,
    json_mode,
    new_call_id,
    new_completion_id,
    only,
    parse_arguments,
    text_content,
    tool_calls_of,
    tool_choice_of,
    tool_delta,
    tool_names,
    unsupported,
    usage,
)
from ._names import path_segment
from .base import Capabilities
from .http import HTTPProvider

if TYPE_CHECKING:
    from .._request import ChatRequest
    from .._sse import ServerSentEvent

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
#: Google's documented stand-in for a function call replayed without its thought signature.
SKIP_SIGNATURE = "skip_thought_signature_validator"
_SIG_SEP = "."
#: The resource collections a model name may name itself in (``models/gemini-2.5-flash``).
_COLLECTIONS = ("models", "tunedModels")

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}

_GENERATION = {
    "temperature": "temperature",
    "top_p": "topP",
    "max_tokens": "maxOutputTokens",
    "max_completion_tokens": "maxOutputTokens",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "n": "candidateCount",
}
_RULES = {
    **NO_OP,
    **dict.fromkeys(_GENERATION),
    "stop": None,
    "tools": None,
    "tool_choice": None,
    "parallel_tool_calls": only(True),
    "response_format": None,
    "stream_options": None,
}


def call_id(call: dict[str, Any], signature: str | None) -> str:
    """The OpenAI id for a Gemini function call: its own id or a new one, with the thought signature appended."""
    base = str(call.get("id") or new_call_id())
    return f"{base}{_SIG_SEP}{signature}" if signature else base


def _split_id(value: str) -> tuple[str, str | None]:
    base, sep, signature = value.partition(_SIG_SEP)
    return base, (signature or None) if sep else None


def _part(piece: str | Image, where: str, provider: str) -> dict[str, Any]:
    if not isinstance(piece, Image):
        return {"text": piece}
    if piece.data is not None:
        return {"inlineData": {"mimeType": piece.media_type, "data": piece.data}}
    url = piece.url or ""
    if url.startswith(("gs://", "https://generativelanguage.googleapis.com/")):
        return {"fileData": {"mimeType": mimetypes.guess_type(url)[0] or "image/jpeg", "fileUri": url}}
    raise unsupported(
        where, "with an http(s) image URL is not supported (Gemini takes data: URLs or Files API URIs)", provider
    )


def convert_messages(messages: list[dict[str, Any]], provider: str) -> tuple[list[str], list[dict[str, Any]]]:
    """OpenAI messages → (system instruction pieces, Gemini contents)."""
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names = tool_names(messages)
    for i, msg in enumerate(messages):
        role, where, content = msg["role"], f"messages[{i}]", msg.get("content")
        if role in ("system", "developer"):
            system.append(text_content(content, where, provider))
            continue
        if role == "function":
            raise unsupported(f"{where}.role", "'function' (the legacy role) is not supported; use tools", provider)
        parts: list[dict[str, Any]]
        if role == "tool":
            name = names.get(msg["tool_call_id"]) or msg.get("name")
            if not name:
                raise InvalidRequestError(
                    f"Invalid argument {where}.tool_call_id: no earlier assistant tool call has this id, and Gemini "
                    "needs the function's name",
                    param=f"{where}.tool_call_id",
                )
            text = text_content(content, where, provider)
            value = parse_arguments(text, where) if text.strip().startswith("{") else None
            response = value if isinstance(value, dict) else {"result": text}
            parts, gem_role = [{"functionResponse": {"name": name, "response": response}}], "user"
        else:
            gem_role = "model" if role == "assistant" else "user"
            parts = [_part(p, f"{where}.content", provider) for p in content_parts(content, where, provider) if p != ""]
            for cid, name, args in tool_calls_of(msg, where) if role == "assistant" else []:
                signature = _split_id(cid)[1]
                parts.append(
                    {"functionCall": {"name": name, "args": args}, "thoughtSignature": signature or SKIP_SIGNATURE}
                )
        if contents and contents[-1]["role"] == gem_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gem_role, "parts": parts})
    return system, contents


def _retry_delay(payload: Any) -> float | None:
    err = payload.get("error") if isinstance(payload, dict) else None
    details = err.get("details") if isinstance(err, dict) else None
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            try:
                return float(str(detail.get("retryDelay", "")).rstrip("s"))
            except ValueError:
                return None
    return None


def _usage(meta: Any) -> Any:
    if not isinstance(meta, dict):
        return None
    thoughts = meta.get("thoughtsTokenCount")
    completion = int(meta.get("candidatesTokenCount") or 0) + int(thoughts or 0)
    return usage(
        meta.get("promptTokenCount"), completion, cached=meta.get("cachedContentTokenCount"), reasoning=thoughts
    )


def _finish(reason: str, has_calls: bool) -> str:
    finish = FINISH_REASONS.get(reason, "stop")
    return "tool_calls" if has_calls and finish == "stop" else finish


def _calls(parts: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [
        (
            call_id(p["functionCall"], p.get("thoughtSignature")),
            p["functionCall"].get("name", ""),
            dumps(p["functionCall"].get("args") or {}).decode(),
        )
        for p in parts
        if isinstance(p.get("functionCall"), dict)
    ]


def _text(parts: list[dict[str, Any]]) -> str:
    return "".join(p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought"))


class GeminiStreamParser(SSEFrameParser):
    """Gemini SSE frames (each a whole GenerateContentResponse) → OpenAI chunks."""

    def __init__(self, provider: str, model: str, *, candidates: int, include_usage: bool) -> None:
        super().__init__(provider)
        self.chunks = ChunkMaker(provider, model, include_usage=include_usage)
        self._expected = candidates
        self._started: set[int] = set()
        self._done: set[int] = set()
        self._calls: dict[int, int] = {}
        self._usage: Any = None

    def _frame(self, ev: ServerSentEvent, out: list[ChatCompletionChunk]) -> None:
        if not ev.data.strip():
            return
        try:
            payload = loads(ev.data)
        except Exception as e:
            raise self.malformed(ev.data, e) from e
        if not isinstance(payload, dict):
            raise self.malformed(ev.data)
        if "error" in payload:
            raise error_frame(payload, self.provider)
        if payload.get("responseId"):
            self.chunks.id = f"chatcmpl-{payload['responseId']}"
        self.chunks.model = payload.get("modelVersion") or self.chunks.model
        self._usage = _usage(payload.get("usageMetadata")) or self._usage
        make = self.chunks.make
        for cand in payload.get("candidates") or ():
            index = int(cand.get("index") or 0)
            if index in self._done:
                continue
            if index not in self._started:
                self._started.add(index)
                out.append(make(ChoiceDelta(role="assistant", content=""), index=index))
            parts = (cand.get("content") or {}).get("parts") or []
            text = _text(parts)
            if text:
                out.append(make(ChoiceDelta(content=text), index=index))
            for cid, name, args in _calls(parts):
                n = self._calls[index] = self._calls.get(index, -1) + 1
                out.append(make(ChoiceDelta(tool_calls=[tool_delta(n, cid, name, args)]), index=index))
            if cand.get("finishReason"):
                self._done.add(index)
                finish = _finish(cand["finishReason"], index in self._calls)
                if len(self._done) >= self._expected:
                    self.chunks.end(out, finish, self._usage, index=index)
                    self.finished = True
                else:
                    out.append(make(ChoiceDelta(), finish, index=index))
        if not payload.get("candidates") and (payload.get("promptFeedback") or {}).get("blockReason"):
            self.chunks.end(out, "content_filter", self._usage)
            self.finished = True


class Gemini(HTTPProvider):
    """Google's Gemini API. ``api_key`` defaults to ``GEMINI_API_KEY``, then ``GOOGLE_API_KEY``."""

    capabilities = Capabilities(streaming=True, tools=True, vision=True, json_mode=True, system_role=True)
    key_name = "gemini"
    api_key_envs = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    default_base_url = DEFAULT_BASE_URL
    default_model: str | None = "gemini-2.5-flash"

    def auth_headers(self) -> dict[str, str]:
        # In a header, never in the URL (where it would end up in logs).
        return {"x-goog-api-key": self.api_key} if self.api_key else {}

    def _model_path(self, model: str) -> str:
        """``models/{name}`` (or a tuned model's ``tunedModels/{name}``), the name checked and quoted."""
        model = self.resolve_model(model)
        collection, sep, name = model.partition("/")
        if not sep or collection not in _COLLECTIONS:
            collection, name = "models", model
        return f"{collection}/{path_segment(name, provider=self.name)}"

    def chat_request(self, request: ChatRequest, *, stream: bool) -> WireRequest:
        params = accepted_params(request.params, _RULES, provider=self.name, drop=request.drop_unsupported)
        system, contents = convert_messages(request.messages, self.name)
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
        config = {_GENERATION[k]: v for k, v in params.items() if k in _GENERATION}
        if "stop" in params:
            config["stopSequences"] = [params["stop"]] if isinstance(params["stop"], str) else list(params["stop"])
        mode = json_mode(params.get("response_format"))
        if mode is not None:
            config["responseMimeType"] = "application/json"
            if mode.schema is not None:
                config["responseJsonSchema"] = mode.schema
        if config:
            body["generationConfig"] = config
        specs = function_specs(params.get("tools"), self.name)
        if specs:
            decls = []
            for f in specs:
                decl: dict[str, Any] = {"name": f.name}
                if f.description:
                    decl["description"] = f.description
                if f.parameters:
                    decl["parametersJsonSchema"] = f.parameters
                decls.append(decl)
            body["tools"] = [{"functionDeclarations": decls}]
        if "tool_choice" in params:
            kind, fn = tool_choice_of(params["tool_choice"])
            cfg: dict[str, Any] = {"mode": {"auto": "AUTO", "none": "NONE"}.get(kind, "ANY")}
            if fn:
                cfg["allowedFunctionNames"] = [fn]
            body["toolConfig"] = {"functionCallingConfig": cfg}
        body.update(request.extra_body)
        action = "streamGenerateContent" if stream else "generateContent"
        query = {"alt": "sse", **request.extra_query} if stream else request.extra_query or None
        headers = {**self._base_headers, "accept": "text/event-stream" if stream else "application/json"}
        headers.update(request.extra_headers)
        url = f"{self.base_url}/{self._model_path(request.model)}:{action}"
        return WireRequest("POST", url, headers, dumps(body), query)

    def parse_completion(self, body: bytes, request: ChatRequest) -> ChatCompletion:
        data = loads_or_text(body)
        if isinstance(data, dict) and "error" in data:
            raise error_frame(data, self.name)
        if not isinstance(data, dict):
            raise APIConnectionError(f"Malformed response from the provider: {body[:200]!r}", provider=self.name)
        choices = []
        for cand in data.get("candidates") or ():
            parts = (cand.get("content") or {}).get("parts") or []
            calls = [ChatCompletionMessageToolCall(id=c, function=Function(n, a)) for c, n, a in _calls(parts)]
            message = ChatCompletionMessage(
                content=_text(parts) if not calls or _text(parts) else None, tool_calls=calls or None
            )
            finish = _finish(cand.get("finishReason") or "STOP", bool(calls))
            choices.append(Choice(index=int(cand.get("index") or 0), message=message, finish_reason=finish))
        if not choices and (data.get("promptFeedback") or {}).get("blockReason"):
            choices.append(Choice(message=ChatCompletionMessage(content=""), finish_reason="content_filter"))
        return ChatCompletion(
            id=f"chatcmpl-{data['responseId']}" if data.get("responseId") else new_completion_id(),
            created=int(time.time()),
            model=data.get("modelVersion") or request.model,
            choices=choices,
            usage=_usage(data.get("usageMetadata")),
        )

    def stream_parser(self, request: ChatRequest) -> GeminiStreamParser:
        include = bool((request.params.get("stream_options") or {}).get("include_usage"))
        n = request.params.get("n") or 1
        return GeminiStreamParser(
            self.name, request.model or self.default_model or "", candidates=n, include_usage=include
        )

    def error_for(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        payload = loads_or_text(body)
        if isinstance(payload, list) and payload and isinstance(payload[0], dict):
            payload = payload[0]
        hdrs = {k.lower(): v for k, v in headers.items()}
        if status == 400 and "API_KEY_INVALID" in str(payload):
            status = 401  # Gemini answers a bad key with 400 INVALID_ARGUMENT, reason API_KEY_INVALID
        retry = retry_after_seconds(hdrs)
        return status_error(
            status,
            payload,
            headers=hdrs,
            provider=self.name,
            retry_after=retry if retry is not None else _retry_delay(payload),
        )

    def models_request(self) -> WireRequest:
        headers = {k: v for k, v in self._base_headers.items() if k != "content-type"}
        return WireRequest("GET", f"{self.base_url}/models", headers, None, {"pageSize": 1000})

    def parse_models(self, body: bytes) -> list[Model]:
        data = loads_or_text(body)
        if not isinstance(data, dict) or not isinstance(data.get("models", []), list):
            raise APIConnectionError(f"Malformed models list: {str(data)[:200]}", provider=self.name)
        return [
            Model(id=str(m.get("name", "")).removeprefix("models/"), owned_by="google")
            for m in data.get("models", [])
            if "generateContent" in (m.get("supportedGenerationMethods") or ["generateContent"])
        ]
