"""OpenTelemetry spans for chat calls, following the GenAI semantic conventions **v1.37.0**.

Tracing costs nothing unless the application uses it. polychat never imports ``opentelemetry`` itself: a call is
traced only when the application has already imported ``opentelemetry.trace`` *and* installed a real tracer
provider (``trace.set_tracer_provider(...)``, or ``polychat serve --otel``). Otherwise :func:`tracer` is one dict
lookup and returns None, and nothing below runs.

The span tree of one call::

    chat {model}           CLIENT  the logical call, retries and failovers included (semconv: the GenAI span)
    ├── attempt {provider} INTERNAL one try of one provider
    ├── hedge {provider}   INTERNAL a provider raced against a slow one (``hedge_after``)
    └── resume {provider}  INTERNAL a provider continuing an interrupted stream (``resume=True``)

Every span carries ``gen_ai.operation.name``, ``gen_ai.provider.name`` (and the older ``gen_ai.system`` for
backends on semconv ≤ 1.36), ``gen_ai.request.model``; answers add ``gen_ai.response.model``, ``.id``,
``.finish_reasons`` and ``gen_ai.usage.*``; failures ``error.type`` and an ERROR status. polychat's own attributes
are under ``polychat.*``: attempt index and kind, retry number, outcome, retryable, breaker state, the proxy route
(scheme, host and port only: never credentials), time to first token. A stream's spans end when the stream does:
finished, closed early by the caller (outcome ``closed``) or interrupted (ERROR).

Prompt and answer text are recorded only when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`` (the
variable OpenTelemetry's own GenAI instrumentations read), as ``gen_ai.input.messages`` /
``gen_ai.output.messages`` on the call span. Keys, proxy passwords and URL credentials are never recorded.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ._request import ChatRequest
    from .errors import Attempt
    from .providers.base import Provider
    from .routing.plan import FailoverPlan, Step
    from .types import ChatCompletion, ChatCompletionChunk

#: The version of the OpenTelemetry semantic conventions these spans follow.
SEMCONV_VERSION = "1.37.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

#: ``gen_ai.provider.name`` values (semconv's well-known list) for polychat's providers and presets; any other
#: provider is named by its lower-cased type (``vllm``, ``lmstudio``...).
_SEMCONV_PROVIDERS = {
    "OpenaiChat": "openai",
    "Anthropic": "anthropic",
    "Gemini": "gcp.gemini",
    "Ollama": "ollama",
    "Local": "llama_cpp",
    "azure": "azure.ai.openai",
    "groq": "groq",
    "mistral": "mistral_ai",
    "deepseek": "deepseek",
    "perplexity": "perplexity",
    "xai": "x_ai",
}

_cache: list[Any] = [None, None]  # [tracer provider seen last, its tracer (None: tracing off)]


def tracer() -> Any:
    """polychat's tracer, or None when the application has not configured OpenTelemetry tracing."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    if provider is _cache[0]:
        return _cache[1]
    on = not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))
    from . import __version__

    _cache[:] = [provider, provider.get_tracer("polychat", __version__, schema_url=SCHEMA_URL) if on else None]
    return _cache[1]


def provider_system(provider: Provider) -> str:
    """``gen_ai.provider.name`` for ``provider``."""
    for key in (getattr(provider, "key_name", None), type(provider).__name__):
        if isinstance(key, str) and key in _SEMCONV_PROVIDERS:
            return _SEMCONV_PROVIDERS[key]
    for cls in type(provider).__mro__:
        if cls.__name__ in _SEMCONV_PROVIDERS and cls.__name__ != "OpenaiChat":
            return _SEMCONV_PROVIDERS[cls.__name__]
    key = getattr(provider, "key_name", None)
    return key.lower() if isinstance(key, str) and key else type(provider).__name__.lower()


def route_label(url: str | None) -> str:
    """A proxy URL as ``scheme://host:port``: user names, passwords and paths never leave this function."""
    if not url:
        return "direct"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "invalid"
    return f"{parts.scheme}://{host}{port}"


def _server(provider: Provider) -> tuple[str | None, int | None]:
    base = getattr(provider, "base_url", None)
    if not isinstance(base, str) or not base:
        return None, None
    try:
        parts = urlsplit(base)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None, None
    return parts.hostname, port


_REQUEST_ATTRS = (
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
    ("seed", "gen_ai.request.seed"),
    ("n", "gen_ai.request.choice.count"),
)


def _messages(messages: list[dict[str, Any]]) -> str:
    """Chat messages in semconv's ``gen_ai.input.messages`` shape (role + parts), as JSON."""
    out = []
    for m in messages:
        content = m.get("content")
        parts: list[dict[str, Any]] = []
        if isinstance(content, str):
            parts.append({"type": "text", "content": content})
        elif isinstance(content, list):
            for p in content:
                if isinstance(p, dict) and p.get("type") == "text":
                    parts.append({"type": "text", "content": p.get("text", "")})
                elif isinstance(p, dict):
                    parts.append({"type": str(p.get("type", "unknown"))})  # images etc.: the kind, not the data
        for call in m.get("tool_calls") or ():
            fn = call.get("function") or {}
            parts.append(
                {"type": "tool_call", "id": call.get("id"), "name": fn.get("name"), "arguments": fn.get("arguments")}
            )
        if m.get("role") == "tool":
            parts = [{"type": "tool_call_response", "id": m.get("tool_call_id"), "response": content}]
        out.append({"role": m.get("role"), "parts": parts})
    return json.dumps(out, ensure_ascii=False)


class _Tally:
    """What a stream said about itself (model, id, finish reasons, usage), and, when captured, its text."""

    __slots__ = ("finish", "model", "rid", "text", "usage")

    def __init__(self) -> None:
        self.model = self.rid = ""
        self.finish: dict[int, str] = {}
        self.usage: Any = None
        self.text: list[str] | None = None

    def add(self, chunk: ChatCompletionChunk) -> None:
        self.model = chunk.model or self.model
        self.rid = chunk.id or self.rid
        if chunk.usage is not None:
            self.usage = chunk.usage
        for ch in chunk.choices:
            if ch.finish_reason:
                self.finish[ch.index] = ch.finish_reason
            if self.text is not None and ch.index == 0 and ch.delta.content:
                self.text.append(ch.delta.content)

    def apply(self, span: Any) -> None:
        _response_attrs(span, self.model, self.rid, [self.finish[i] for i in sorted(self.finish)], self.usage)


def _response_attrs(span: Any, model: str, rid: str, finish: list[str], usage: Any) -> None:
    if model:
        span.set_attribute("gen_ai.response.model", model)
    if rid:
        span.set_attribute("gen_ai.response.id", rid)
    if finish:
        span.set_attribute("gen_ai.response.finish_reasons", finish)
    if usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)


def _completion_attrs(span: Any, result: ChatCompletion) -> None:
    finish = [c.finish_reason for c in result.choices if c.finish_reason]
    _response_attrs(span, result.model, result.id, finish, result.usage)


def _fail(span: Any, error: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    name = type(error).__name__
    span.set_attribute("error.type", name)
    status = getattr(error, "status_code", None)
    if isinstance(status, int):
        span.set_attribute("http.response.status_code", status)
    # The class name, not the message: a message may quote an upstream body.
    span.set_status(Status(StatusCode.ERROR, name))


class CallTrace:
    """The spans of one call: the ``chat {model}`` span and one child per attempt."""

    def __init__(self, tracer: Any, request: ChatRequest, stream: bool) -> None:
        from opentelemetry.trace import SpanKind, set_span_in_context

        model = request.model
        attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "polychat.stream": stream}
        if model:
            attrs["gen_ai.request.model"] = model
        params = request.params
        for key, name in _REQUEST_ATTRS:
            value = params.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                attrs[name] = value
        stop = params.get("stop")
        if stop:
            attrs["gen_ai.request.stop_sequences"] = [stop] if isinstance(stop, str) else [str(s) for s in stop]
        self.capture = os.environ.get(CAPTURE_ENV, "").strip().lower() in ("1", "true", "yes")
        if self.capture:
            attrs["gen_ai.input.messages"] = _messages(request.messages)
        self.tracer = tracer
        self.model = model
        self.span = tracer.start_span(f"chat {model}" if model else "chat", kind=SpanKind.CLIENT, attributes=attrs)
        self.context = set_span_in_context(self.span)
        self.spans: dict[int, tuple[Any, _Tally]] = {}
        self.tally = _Tally()
        if self.capture:
            self.tally.text = []
        self.started = 0
        self.first_token: float | None = None
        self.last: Attempt | None = None
        self.last_provider: Provider | None = None

    # -- attempts ------------------------------------------------------------------------------------------------

    def attempt_started(self, step: Step, plan: FailoverPlan, proxy: str | None) -> None:
        from opentelemetry.trace import SpanKind

        p = step.provider
        model = plan.model or p.default_model or ""
        system = provider_system(p)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": system,
            "gen_ai.system": system,
            "polychat.provider": p.name,
            "polychat.attempt.index": self.started,
            "polychat.attempt.kind": step.kind,
            "polychat.retry": step.retry,
            "polychat.proxy": route_label(proxy),
        }
        if model:
            attrs["gen_ai.request.model"] = model
        host, port = _server(p)
        if host:
            attrs["server.address"] = host
            if port:
                attrs["server.port"] = port
        if plan.breaker is not None:
            attrs["polychat.breaker.state"] = plan.breaker.state(p.breaker_key)
        self.started += 1
        span = self.tracer.start_span(
            f"{step.kind} {p.name}", context=self.context, kind=SpanKind.INTERNAL, attributes=attrs
        )
        self.spans[id(step)] = (span, _Tally())

    def attempt_ended(self, step: Step, attempt: Attempt, result: ChatCompletion | None) -> None:
        entry = self.spans.pop(id(step), None)
        if entry is None:
            return
        span, tally = entry
        span.set_attribute("polychat.outcome", attempt.outcome)
        span.set_attribute("polychat.retryable", attempt.retryable)
        if attempt.ttft is not None:
            span.set_attribute("polychat.time_to_first_token", attempt.ttft)
        if result is not None:
            _completion_attrs(span, result)
        else:
            tally.apply(span)
        if attempt.error is not None:
            _fail(span, attempt.error)
        self.last, self.last_provider = attempt, step.provider
        if attempt.outcome == "ok":
            self.span.set_attribute("gen_ai.provider.name", provider_system(step.provider))
            self.span.set_attribute("gen_ai.system", provider_system(step.provider))
            self.span.set_attribute("polychat.provider", step.provider.name)
            if attempt.ttft is not None and self.first_token is None:
                self.first_token = attempt.ttft
        span.end()

    def chunk(self, chunk: ChatCompletionChunk, live: list[Step]) -> None:
        """A chunk that reached the caller: counted for the call and for the attempt that produced it."""
        self.tally.add(chunk)
        name = chunk.provider
        for step in reversed(live):
            if step.provider.name == name:
                entry = self.spans.get(id(step))
                if entry is not None:
                    entry[1].add(chunk)
                return

    # -- the call ------------------------------------------------------------------------------------------------

    def end(self, attempts: list[Attempt], result: ChatCompletion | None, error: BaseException | None) -> None:
        span = self.span
        span.set_attribute("polychat.attempts", len(attempts))
        if self.first_token is not None:
            span.set_attribute("polychat.time_to_first_token", self.first_token)
        if not any(a.outcome == "ok" for a in attempts) and self.last_provider is not None:
            system = provider_system(self.last_provider)
            span.set_attribute("gen_ai.provider.name", system)
            span.set_attribute("gen_ai.system", system)
        if result is not None:
            _completion_attrs(span, result)
            if self.capture:
                out = [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": c.message.content or ""}],
                        "finish_reason": c.finish_reason,
                    }
                    for c in result.choices
                ]
                span.set_attribute("gen_ai.output.messages", json.dumps(out, ensure_ascii=False))
        else:
            self.tally.apply(span)
            if self.capture and self.tally.text is not None and (self.tally.text or self.tally.finish):
                out = [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": "".join(self.tally.text)}],
                        "finish_reason": self.tally.finish.get(0),
                    }
                ]
                span.set_attribute("gen_ai.output.messages", json.dumps(out, ensure_ascii=False))
        if error is not None:
            _fail(span, error)
        elif not any(a.outcome == "ok" for a in attempts):
            span.set_attribute("polychat.outcome", "closed")
        span.end()
