"""OpenTelemetry spans and per-attempt records, with the SDK's own InMemorySpanExporter, sync and async.

Each scenario runs against the fault-injecting server: a failover over a dead provider, a hedge, a resume, a
stream closed early, an interrupted stream. The checks are the span tree (one ``chat {model}`` span, a child per
attempt), the GenAI attributes, the outcomes, the end times, and ``response.attempts`` / ``stream.attempts``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from polychat import AsyncClient, errors
from polychat.providers import OpenaiChat
from polychat.routing import CircuitBreaker, RetryProvider
from tests.support.calls import MSGS, Seen, call_as_user
from tests.support.faults import FaultServer, Ok, ResetAfter, Stall
from tests.support.servers import TinyProxy

DEAD = "http://127.0.0.1:9/v1"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """A configured SDK tracer provider for this test only (the global one is restored afterwards)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    yield exporter
    provider.shutdown()


def chain(*urls: str, **kwargs: Any) -> RetryProvider:
    providers = [OpenaiChat(base_url=u, name=name, api_key="") for name, u in zip("ABCDEFG", urls, strict=False)]
    kwargs.setdefault("breaker", CircuitBreaker())
    kwargs.setdefault("max_retries", 0)
    return RetryProvider(providers, **kwargs)


def call(flavour: str, provider: Any, *, stream: bool, stop_after: int | None = None, **kw: Any) -> Seen:
    """One call the way a user makes it; ``stop_after=n`` closes a stream after n chunks."""
    return call_as_user(flavour, {"provider": provider}, stream=stream, stop_after=stop_after, **kw)


def tree(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The one call span and its children (in start order), checking they form one well-formed tree."""
    finished = exporter.get_finished_spans()
    roots = [s for s in finished if s.name.startswith("chat")]
    assert len(roots) == 1, [s.name for s in finished]
    root = roots[0]
    children = sorted((s for s in finished if s is not root), key=lambda s: s.start_time or 0)
    assert len(children) == len(finished) - 1
    for child in children:
        assert child.parent is not None and child.parent.span_id == root.context.span_id
        assert child.context.trace_id == root.context.trace_id
        assert child.end_time is not None and root.end_time is not None
        assert root.start_time is not None and child.start_time is not None
        assert root.start_time <= child.start_time <= child.end_time <= root.end_time
    return root, children


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


# -- the scenarios --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_failover_over_a_dead_provider(
    spans: InMemorySpanExporter, faults: FaultServer, flavour: str, stream: bool
) -> None:
    ok = faults.scenario("ok", Ok(text="Paris is the capital."))
    res = call(flavour, chain(DEAD, ok), stream=stream)
    assert res.error is None and res.provider == "B" and "Paris" in res.text

    # response.attempts / stream.attempts: the failed one before the answer, then the answer
    assert [(a.provider, a.outcome, a.kind) for a in res.attempts] == [
        ("A", "failed", "attempt"),
        ("B", "ok", "attempt"),
    ]
    assert isinstance(res.attempts[0].error, errors.APIConnectionError) and res.attempts[0].retryable
    assert (res.attempts[1].ttft is not None) == stream

    root, (dead, good) = tree(spans)
    a = attrs(root)
    assert root.name == "chat m" and root.kind == SpanKind.CLIENT
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "m"
    assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.system"] == "openai"
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["polychat.provider"] == "B" and a["polychat.attempts"] == 2 and a["polychat.stream"] is stream
    assert root.status.status_code == StatusCode.UNSET
    assert ("polychat.time_to_first_token" in a) == stream

    d = attrs(dead)
    assert dead.name == "attempt A" and dead.kind == SpanKind.INTERNAL
    assert d["polychat.attempt.index"] == 0 and d["polychat.outcome"] == "failed" and d["polychat.retryable"] is True
    assert d["error.type"] == "APIConnectionError" and dead.status.status_code == StatusCode.ERROR
    assert d["server.address"] == "127.0.0.1" and d["server.port"] == 9
    assert d["polychat.breaker.state"] == "closed" and d["polychat.proxy"] == "direct"

    g = attrs(good)
    assert good.name == "attempt B" and g["polychat.attempt.index"] == 1 and g["polychat.outcome"] == "ok"
    assert g["gen_ai.response.model"] and g["gen_ai.response.finish_reasons"] == ("stop",)
    assert g["gen_ai.usage.output_tokens"] == a["gen_ai.usage.output_tokens"]
    assert good.status.status_code == StatusCode.UNSET and "error.type" not in g
    # nothing of the prompt or the answer unless opted in
    assert not any("messages" in k for s in (root, dead, good) for k in attrs(s))


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_hedge_that_wins_and_the_attempt_that_lost(
    spans: InMemorySpanExporter, faults: FaultServer, flavour: str, stream: bool
) -> None:
    slow = faults.scenario("slow", Stall())  # never answers: the hedge always wins
    fast = faults.scenario("fast", Ok(text="The hedge answered."))
    res = call(flavour, chain(slow, fast, hedge_after=0.2), stream=stream)
    assert res.error is None and res.provider == "B"
    assert [(a.provider, a.outcome, a.kind) for a in res.attempts] == [("A", "lost", "attempt"), ("B", "ok", "hedge")]
    assert res.attempts[0].error is None and res.attempts[0].elapsed >= 0.2

    root, (first, hedge) = tree(spans)
    assert first.name == "attempt A" and attrs(first)["polychat.outcome"] == "lost"
    assert first.status.status_code == StatusCode.UNSET  # losing a race is not an error
    assert hedge.name == "hedge B" and attrs(hedge)["polychat.attempt.kind"] == "hedge"
    assert attrs(hedge)["polychat.outcome"] == "ok" and attrs(hedge)["polychat.attempt.index"] == 1
    assert attrs(root)["polychat.provider"] == "B" and attrs(root)["polychat.attempts"] == 2


def test_resume_on_the_next_provider(spans: InMemorySpanExporter, faults: FaultServer, flavour: str) -> None:
    cut = faults.scenario("cut", ResetAfter(n=3, text="one two three four five six"))
    rest = faults.scenario("rest", Ok(text="one two three four five six"))
    res = call(flavour, chain(cut, rest, resume=True), stream=True)
    assert res.error is None and res.provider == "B"
    assert [(a.provider, a.outcome, a.kind) for a in res.attempts] == [
        ("A", "failed", "attempt"),
        ("B", "ok", "resume"),
    ]

    root, (first, resumed) = tree(spans)
    assert first.name == "attempt A" and first.status.status_code == StatusCode.ERROR
    assert attrs(first)["polychat.time_to_first_token"] >= 0  # it had started answering
    assert resumed.name == "resume B" and attrs(resumed)["polychat.attempt.kind"] == "resume"
    assert attrs(resumed)["polychat.outcome"] == "ok"
    assert root.status.status_code == StatusCode.UNSET and attrs(root)["polychat.provider"] == "B"


class PrefillChat(OpenaiChat):
    """Says it continues an assistant prefill; the server behind it refuses one (a 400)."""

    capabilities = msgspec.structs.replace(OpenaiChat.capabilities, prefill=True)


def test_resume_refused_as_prefill_then_continued(
    spans: InMemorySpanExporter, faults: FaultServer, flavour: str
) -> None:
    text = "one two three four five six seven eight"
    cut = faults.scenario("cut", ResetAfter(n=3, text=text))
    picky = faults.scenario("picky", Ok(text=text, continues=True, reject_prefill=True))
    providers = [OpenaiChat(base_url=cut, name="A", api_key=""), PrefillChat(base_url=picky, name="B", api_key="")]
    res = call(flavour, RetryProvider(providers, breaker=CircuitBreaker(), max_retries=0, resume=True), stream=True)
    assert res.error is None and res.text == text
    assert [(a.provider, a.outcome, a.kind, a.error_class) for a in res.attempts] == [
        ("A", "failed", "attempt", "APIConnectionError"),
        ("B", "failed", "resume", "BadRequestError"),  # the prefill, refused
        ("B", "ok", "resume", "ok"),  # the same provider, asked to continue instead
    ]
    _, children = tree(spans)
    assert [(c.name, attrs(c)["polychat.outcome"]) for c in children] == [
        ("attempt A", "failed"),
        ("resume B", "failed"),
        ("resume B", "ok"),
    ]
    assert [attrs(c)["polychat.attempt.index"] for c in children] == [0, 1, 2]


def test_interrupted_stream_ends_its_spans_with_the_error(
    spans: InMemorySpanExporter, faults: FaultServer, flavour: str
) -> None:
    cut = faults.scenario("cut", ResetAfter(n=2))
    res = call(flavour, chain(cut), stream=True)
    assert isinstance(res.error, errors.StreamInterruptedError)
    root, (only,) = tree(spans)
    assert root.status.status_code == StatusCode.ERROR
    assert attrs(root)["error.type"] == "StreamInterruptedError"
    assert only.status.status_code == StatusCode.ERROR and attrs(only)["polychat.outcome"] == "failed"
    assert [(a.provider, a.outcome) for a in res.error.attempts] == [("A", "failed")]


def test_an_async_stream_dropped_unclosed_still_ends_its_spans(
    spans: InMemorySpanExporter, faults: FaultServer
) -> None:
    long = faults.scenario("long", Ok(text=" ".join(["word"] * 40), delay_between=0.05))

    async def main() -> None:
        async with AsyncClient(provider=chain(long)) as client:
            stream = await client.chat.completions.create(model="m", messages=MSGS, stream=True)
            await stream.__anext__()
            del stream  # never closed: garbage collected

    asyncio.run(main())
    root, (only,) = tree(spans)
    assert attrs(root)["polychat.outcome"] == "closed" and attrs(only)["polychat.outcome"] == "closed"


def test_stream_closed_early_ends_its_spans_when_closed(
    spans: InMemorySpanExporter, faults: FaultServer, flavour: str
) -> None:
    # Chunks keep coming for a while; the caller leaves after two of them.
    long = faults.scenario("long", Ok(text=" ".join(["word"] * 40), delay_between=0.05))
    before = time.time_ns()
    res = call(flavour, chain(long), stream=True, stop_after=2)
    after = time.time_ns()
    assert res.error is None
    assert [(a.provider, a.outcome) for a in res.attempts] == [("A", "closed")]
    root, (only,) = tree(spans)
    assert attrs(only)["polychat.outcome"] == "closed" and only.status.status_code == StatusCode.UNSET
    assert attrs(root)["polychat.outcome"] == "closed"
    # The spans ended when the stream was closed, long before the upstream would have finished (40 x 50 ms).
    assert root.end_time is not None and before <= root.end_time <= after
    assert len(faults.requests("long")) == 1


def test_all_failed_call_span_is_an_error(spans: InMemorySpanExporter, faults: FaultServer, flavour: str) -> None:
    res = call(flavour, chain(DEAD, DEAD), stream=False)
    assert isinstance(res.error, errors.AllProvidersFailedError)
    root, children = tree(spans)
    assert [c.name for c in children] == ["attempt A", "attempt B"]
    assert root.status.status_code == StatusCode.ERROR and attrs(root)["error.type"] == "AllProvidersFailedError"
    assert attrs(root)["gen_ai.provider.name"] == "openai"


# -- content, secrets, and the cost of not tracing ---------------------------------------------------------------


def test_message_content_only_when_opted_in(
    spans: InMemorySpanExporter, faults: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok = faults.scenario("ok", Ok(text="Bonjour tout le monde."))
    call("sync", chain(ok), stream=True)
    root, _ = tree(spans)
    assert "gen_ai.input.messages" not in attrs(root) and "Bonjour" not in repr(attrs(root))
    spans.clear()
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    call("sync", chain(ok), stream=True)
    root, _ = tree(spans)
    sent = json.loads(attrs(root)["gen_ai.input.messages"])
    assert sent == [{"role": "user", "parts": [{"type": "text", "content": MSGS[0]["content"]}]}]
    answer = json.loads(attrs(root)["gen_ai.output.messages"])
    assert answer[0]["role"] == "assistant" and answer[0]["finish_reason"] == "stop"
    assert answer[0]["parts"][0]["content"] == "Bonjour tout le monde."


def test_secrets_never_in_spans(
    spans: InMemorySpanExporter, faults: FaultServer, tinyproxy: TinyProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    key = "sk-live-Very-Secret-Key-1234"
    ok = faults.scenario("ok", Ok(text="fine"))
    url_user, url_password = "urluser", "UrlPassw0rd-xyz"
    with_creds = ok.replace("http://", f"http://{url_user}:{url_password}@")
    assert tinyproxy.password is not None
    providers = [
        OpenaiChat(base_url=DEAD, name="dead", api_key=key, proxy=tinyproxy.url),
        # URL credentials are the Authorization header (HTTP Basic): with an api_key too, the provider is refused
        OpenaiChat(base_url=with_creds, name="good", api_key="", proxy=tinyproxy.url),
    ]
    res = call("sync", RetryProvider(providers, breaker=CircuitBreaker(), max_retries=0), stream=False)
    assert res.error is None and res.provider == "good"
    root, children = tree(spans)
    dump = repr([(s.name, attrs(s), s.status.description, [e.attributes for e in s.events]) for s in [root, *children]])
    for secret in (key, tinyproxy.password, url_password):
        assert secret not in dump
    proxy_attr = attrs(children[1])["polychat.proxy"]
    assert proxy_attr == f"http://127.0.0.1:{tinyproxy.port}"  # the route, without the user or the password


def test_without_a_tracer_provider_nothing_is_traced(faults: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # opentelemetry is imported (by this test module) but no provider is configured: no CallTrace is made.
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    from polychat import _tracing

    assert _tracing.tracer() is None
    ok = faults.scenario("ok", Ok())
    res = call("sync", chain(DEAD, ok), stream=True)
    assert [a.outcome for a in res.attempts] == ["failed", "ok"]  # the attempts are there all the same


def test_polychat_never_imports_opentelemetry(faults: FaultServer) -> None:
    ok = faults.scenario("ok", Ok())
    code = (
        "import sys\n"
        "from polychat import Client, AsyncClient\n"
        "from polychat.providers import OpenaiChat\n"
        "from polychat.routing import RetryProvider\n"
        f"p = RetryProvider([OpenaiChat(base_url={DEAD!r}, api_key=''), OpenaiChat(base_url={ok!r}, api_key='')])\n"
        "r = Client(provider=p).chat.completions.create(model='m', messages=[{'role': 'user', 'content': 'hi'}])\n"
        "assert [a.outcome for a in r.attempts] == ['failed', 'ok'], r.attempts\n"
        "s = Client(provider=p).chat.completions.create(model='m', messages=[{'role': 'user', 'content': 'hi'}],"
        " stream=True)\n"
        "list(s)\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ}, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
