"""The gateway's traces and attempt accounting, end to end: ``polychat serve`` with ``[server] otel = true``
exporting over OTLP/HTTP to a receiver on loopback, called by the official ``openai`` client with a
``traceparent`` header; plus the ``x-polychat-attempts`` header and the per-attempt Prometheus metrics."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from polychat.errors import ConfigError
from tests.support.faults import FaultServer, Ok
from tests.support.gateway import Gateway, run_serve
from tests.support.otlp import OTLPReceiver, ReceivedSpan
from tests.support.servers import free_port, wait_until
from tests.test_gateway import metric_value

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
UPSTREAM_KEY = "sk-upstream-Secret-9f8e7d6c"
SERVER, CLIENT, INTERNAL = 2, 3, 1  # opentelemetry.proto.trace.v1.Span.SpanKind


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as r:
        yield r
    assert not r.errors, r.errors


@pytest.fixture(scope="module")
def gw(fault: FaultServer, receiver: OTLPReceiver) -> Iterator[Gateway]:
    ok = fault.scenario("ok", Ok(text="Hello there, traced."))
    # Each test has its own dead provider (nothing listens on its port), so no test finds one whose circuit
    # breaker earlier tests opened: route "failoverN" is deadN then ok; "down" is dead5 then dead6.
    lines = ["[server]", "otel = true", ""]
    for n in range(1, 7):
        lines += [f"[providers.dead{n}]", 'type = "openai"', f'base_url = "http://127.0.0.1:{free_port()}/v1"', ""]
    lines += ["[providers.ok]", 'type = "openai"', f'base_url = "{ok}"', 'api_key_env = "UPSTREAM_KEY"', ""]
    for n in range(1, 5):
        lines += [f"[routes.failover{n}]", f'chain = ["dead{n}:m", "ok:m"]', "max_retries = 0", ""]
    lines += ["[routes.down]", 'chain = ["dead5:m", "dead6:m"]', "max_retries = 0", ""]
    config = "\n".join(lines)
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_SERVICE_NAME": "gateway-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: export promptly
        "UPSTREAM_KEY": UPSTREAM_KEY,
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",  # even with content on: no key
    }
    with Gateway(config_text=config, env=env) as gateway:
        yield gateway


@pytest.fixture
def client(gw: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0) as c:
        yield c


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def wait_for_trace(receiver: OTLPReceiver, trace_id: str, count: int) -> list[ReceivedSpan]:
    return wait_until(
        lambda: (found := receiver.in_trace(trace_id)) and len(found) >= count and found,
        30,
        what=f"{count} spans of trace {trace_id} at the OTLP receiver",
    )


def check_tree(spans: list[ReceivedSpan], caller_span: str, n: int, *, stream: bool) -> None:
    by_name = {s.name: s for s in spans}
    server = by_name["POST /v1/chat/completions"]
    assert server.kind == SERVER and server.parent_span_id == caller_span  # the caller's traceparent is the parent
    assert server.attributes["http.response.status_code"] == 200 and server.service == "gateway-under-test"
    chat = by_name[f"chat failover{n}"]
    assert chat.kind == CLIENT and chat.parent_span_id == server.span_id
    assert chat.attributes["gen_ai.operation.name"] == "chat" and chat.attributes["polychat.provider"] == "ok"
    assert chat.attributes["polychat.attempts"] == 2 and chat.attributes["polychat.stream"] is stream
    dead, good = by_name[f"attempt dead{n}"], by_name["attempt ok"]
    assert dead.parent_span_id == good.parent_span_id == chat.span_id
    assert dead.kind == good.kind == INTERNAL
    assert dead.status_code == 2 and dead.attributes["error.type"] == "APIConnectionError"
    assert good.attributes["polychat.outcome"] == "ok" and good.attributes["gen_ai.usage.output_tokens"] > 0
    assert ("polychat.time_to_first_token" in good.attributes) == stream
    for s in (dead, good):
        assert chat.start_ns <= s.start_ns <= s.end_ns <= chat.end_ns <= server.end_ns


def test_spans_reach_the_collector_under_the_callers_trace(
    client: openai.OpenAI, receiver: OTLPReceiver, fault: FaultServer
) -> None:
    header, trace_id, span_id = traceparent()
    raw = client.chat.completions.with_raw_response.create(
        model="failover1",
        messages=HELLO,
        extra_headers={"traceparent": header},
    )
    assert raw.parse().choices[0].message.content == "Hello there, traced."
    assert raw.headers["x-polychat-provider"] == "ok"
    assert raw.headers["x-polychat-attempts"] == "dead1=failed:APIConnectionError, ok=ok"
    spans = wait_for_trace(receiver, trace_id, 4)
    check_tree(spans, span_id, 1, stream=False)
    # the upstream key was sent upstream (the fault server saw it) but is in no span
    assert any(UPSTREAM_KEY in r.headers.get("authorization", "") for r in fault.requests("ok"))
    assert UPSTREAM_KEY not in repr(spans)
    assert "Say hello." in repr(spans)  # content capture is on in this gateway, so the check above means something


def test_stream_spans_end_with_the_stream(client: openai.OpenAI, receiver: OTLPReceiver) -> None:
    header, trace_id, span_id = traceparent()
    with client.chat.completions.with_streaming_response.create(
        model="failover2",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"traceparent": header},
    ) as response:
        assert response.headers["x-polychat-attempts"] == "dead2=failed:APIConnectionError, ok=ok"
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == "Hello there, traced."
    check_tree(wait_for_trace(receiver, trace_id, 4), span_id, 2, stream=True)


def test_attempt_metrics_count_successful_requests_too(gw: Gateway, client: openai.OpenAI) -> None:
    before = httpx.get(f"{gw.url}/metrics").text
    client.chat.completions.create(model="failover3", messages=HELLO)
    text = httpx.get(f"{gw.url}/metrics").text

    def delta(name: str, **labels: str) -> float:
        return (metric_value(text, name, **labels) or 0) - (metric_value(before, name, **labels) or 0)

    assert delta("polychat_gateway_attempts_total", provider="dead3", outcome="failed") == 1
    assert delta("polychat_gateway_attempts_total", provider="ok", outcome="ok") == 1
    assert delta("polychat_gateway_failed_attempts_total", provider="dead3", error="APIConnectionError") == 1
    assert delta("polychat_gateway_tokens_total", provider="ok", type="output") > 0
    assert delta("polychat_gateway_tokens_total", provider="ok", type="input") > 0


def test_streams_record_time_to_first_token_per_provider(gw: Gateway, client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="failover4", messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello there, traced."
    text = httpx.get(f"{gw.url}/metrics").text
    count = metric_value(text, "polychat_gateway_attempt_time_to_first_token_seconds_count", provider="ok")
    assert count is not None and count >= 1


def test_an_unsupported_otlp_protocol_is_refused_at_start() -> None:
    done = run_serve(["--otel"], env={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    assert done.returncode == 2
    assert "OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported" in done.stderr


def test_otel_switch_from_the_command_line_or_the_config(tmp_path: Path) -> None:
    from polychat.cli._parser import build_parser
    from polychat.config import load_config
    from polychat.server._settings import merge_config
    from polychat.server.cli import settings_from_args

    assert settings_from_args(build_parser().parse_args(["serve", "--otel"])).otel is True
    plain = settings_from_args(build_parser().parse_args(["serve"]))
    assert plain.otel is False
    path = tmp_path / "polychat.toml"
    path.write_text("[server]\notel = true\n")
    assert merge_config(plain, load_config(path)).otel is True
    path.write_text('[server]\notel = "yes"\n')
    with pytest.raises(ConfigError, match=r"server\.otel"):
        load_config(path)


def test_every_api_route_continues_the_callers_trace(gw: Gateway, receiver: OTLPReceiver) -> None:
    header, trace_id, span_id = traceparent()
    assert httpx.get(f"{gw.base_url}/models", headers={"traceparent": header}).status_code == 200
    (span,) = wait_for_trace(receiver, trace_id, 1)
    assert span.name == "GET /v1/models" and span.kind == SERVER and span.parent_span_id == span_id
    assert span.attributes["http.response.status_code"] == 200


def test_a_failed_request_lists_its_attempts_too(gw: Gateway, client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="down", messages=HELLO, stream=True)
    headers = caught.value.response.headers
    assert headers["x-polychat-attempts"] == "dead5=failed:APIConnectionError, dead6=failed:APIConnectionError"
    text = httpx.get(f"{gw.url}/metrics").text
    assert (metric_value(text, "polychat_gateway_attempts_total", provider="dead6", outcome="failed") or 0) == 1
