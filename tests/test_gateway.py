"""``polychat serve`` end to end: the official ``openai`` client against the gateway, in front of the real llama.cpp
server, the embedded model and the fault-injecting server. Every gateway is a real subprocess on a loopback port.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.faults import ErrorFrame, FaultServer, Ok, Stall, Status
from tests.support.gateway import Gateway, run_serve
from tests.support.servers import LlamaServer, free_port, wait_until

SECRET = "sk-test-SECRET-0123456789abcdef"
HELLO = [{"role": "user", "content": "Say hello."}]

# Fault-server scenarios, one provider each (so circuit breakers of one test don't touch another's provider).
SCENARIOS = ("ok", "boom", "limited", "denied", "midway", "stall", "boom2", "backup", "down1", "down2", "slow", "hang")


def gateway_config(fault: FaultServer, llama: LlamaServer | None) -> str:
    lines = ["[defaults]", "max_retries = 0", ""]
    if llama is not None:
        lines += [
            "[providers.llama]",
            'type = "openai"',
            f'base_url = "{llama.base_url}"',
            'models = ["llama-smol"]',
            "",
        ]
    for name in SCENARIOS:
        lines += [f"[providers.{name}]", 'type = "openai"', f'base_url = "{fault.url}/s/{name}/v1"']
        lines += [f'models = ["fault-{name}"]']
        if name == "denied":
            lines += ['api_key_env = "DENIED_KEY"']
        lines.append("")
    closed = free_port()  # nothing listens here
    lines += ["[providers.refused]", 'type = "openai"', f'base_url = "http://127.0.0.1:{closed}/v1"']
    lines += ['models = ["fault-refused"]', ""]
    lines += ["[routes.failover]", 'chain = ["boom2:m", "backup:m"]', "max_retries = 0", ""]
    lines += ["[routes.all-down]", 'chain = ["down1:m", "down2:m"]', "max_retries = 0", ""]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def gw(fault: FaultServer, llama_server: LlamaServer) -> Iterator[Gateway]:
    with Gateway(config_text=gateway_config(fault, llama_server), env={"DENIED_KEY": SECRET}) as gateway:
        yield gateway


@pytest.fixture
def client(gw: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.base_url, api_key="client-key-not-for-upstream", max_retries=0) as c:
        yield c


def sse_frames(body: bytes) -> list[bytes]:
    """The ``data:`` payloads of an SSE body, checking OpenAI's framing (each event: one data line, blank line)."""
    assert body.endswith(b"\n\n"), body[-100:]
    frames = body[:-2].split(b"\n\n")
    out = []
    for f in frames:
        assert f.startswith(b"data: ") and b"\n" not in f, f
        out.append(f[len(b"data: ") :])
    return out


def metric_value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        m = re.match(r"^([a-z_]+)(\{(.*)\})? (\S+)$", line)
        assert m, line
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if m.group(1) == name and all(found.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return None


# -- the openai client: chat, stream, models -----------------------------------------------------------------------


def test_models_lists_routes_config_models_and_embedded(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids[:2] == ["failover", "all-down"]  # routes first
    assert {"llama-smol", "fault-ok", "fault-refused", "smollm2-135m"} <= set(ids)
    assert client.models.retrieve("llama-smol").owned_by == "llama"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


@pytest.mark.llama
def test_chat_against_llama_server(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="llama-smol", messages=HELLO, max_tokens=8)
    assert raw.headers["x-polychat-provider"] == "llama"
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens > 0


@pytest.mark.llama
def test_stream_against_llama_server_with_usage(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="llama-smol", messages=HELLO, max_tokens=8, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["x-polychat-provider"] == "llama"
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    # llama-cpp-python's server ignores stream_options (no usage chunk): what the upstream sends passes through,
    # the usage chunk is checked against the fault server and the embedded model.


def test_embedded_model_by_provider_name(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="local", messages=HELLO, max_tokens=5)
    assert raw.headers["x-polychat-provider"] == "Local"
    assert raw.parse().choices[0].message.content


def test_stream_wire_format_is_openais(gw: Gateway, fault: FaultServer) -> None:
    fault.scenario("ok", Ok(text="one two three"))
    body = {"model": "fault-ok", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
    r = httpx.post(f"{gw.base_url}/chat/completions", json=body, timeout=30)
    assert r.status_code == 200
    assert r.headers["x-polychat-provider"] == "ok"
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    frames = sse_frames(r.content)
    assert frames[-1] == b"[DONE]"
    chunks = [json.loads(f) for f in frames[:-1]]
    for c in chunks:
        assert c["object"] == "chat.completion.chunk"
        assert set(c) >= {"id", "object", "created", "model", "choices"}
    assert "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"]) == "one two three"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    # the upstream got the stream_options the client asked for
    assert fault.requests("ok")[-1].body["stream_options"] == {"include_usage": True}


# -- failover and upstream errors ----------------------------------------------------------------------------------


def test_route_fails_over_and_names_the_provider(client: openai.OpenAI, gw: Gateway, fault: FaultServer) -> None:
    fault.scenario("boom2", Status(500))
    fault.scenario("backup", Ok(text="from the backup"))
    raw = client.chat.completions.with_raw_response.create(model="failover", messages=HELLO)
    assert raw.headers["x-polychat-provider"] == "backup"
    assert raw.parse().choices[0].message.content == "from the backup"
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert (
        metric_value(metrics, "polychat_gateway_fallback_answers_total", route="failover", provider="backup") or 0
    ) >= 1


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, openai.BadRequestError),
        (404, openai.NotFoundError),
        (422, openai.UnprocessableEntityError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_upstream_status_passes_through(
    client: openai.OpenAI, fault: FaultServer, status: int, error_class: type[openai.APIStatusError]
) -> None:
    fault.scenario("boom", Status(status, message=f"injected {status}"))
    with pytest.raises(error_class) as info:
        client.chat.completions.create(model="fault-boom", messages=HELLO)
    assert info.value.status_code == status
    assert f"injected {status}" in info.value.message
    assert info.value.response.headers["x-polychat-provider"] == "boom"


def test_rate_limit_keeps_retry_after(client: openai.OpenAI, fault: FaultServer) -> None:
    fault.scenario("limited", Status(429, headers={"retry-after": "7"}, message="slow down"))
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="fault-limited", messages=HELLO)
    assert info.value.response.headers["retry-after"] == "7"


def test_stream_failure_before_first_chunk_is_an_http_error(client: openai.OpenAI, fault: FaultServer) -> None:
    fault.scenario("boom", Status(502, message="bad gateway upstream"))
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="fault-boom", messages=HELLO, stream=True)
    assert info.value.status_code == 502


def test_stream_failure_after_first_chunk_sends_an_error_frame(
    client: openai.OpenAI, gw: Gateway, fault: FaultServer
) -> None:
    fault.scenario("midway", ErrorFrame(after_chunks=2, message="upstream exploded"))
    stream = client.chat.completions.create(model="fault-midway", messages=HELLO, stream=True)
    got = []
    with pytest.raises(openai.APIError, match="upstream exploded"):
        for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "alpha beta"
    # on the wire: the chunks, then one error frame, and no [DONE]
    fault.scenario("midway", ErrorFrame(after_chunks=2, message="upstream exploded"))
    r = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "fault-midway", "messages": HELLO, "stream": True})
    frames = sse_frames(r.content)
    assert b"[DONE]" not in frames
    error = json.loads(frames[-1])["error"]
    assert "upstream exploded" in error["message"] and error["type"]
    assert set(error) == {"message", "type", "param", "code"}


def test_all_providers_failed_summarises_attempts(client: openai.OpenAI, fault: FaultServer) -> None:
    fault.scenario("down1", Status(503, message="first is down"))
    fault.scenario("down2", Status(500, message="second is down"))
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="all-down", messages=HELLO)
    assert info.value.status_code == 502
    body: Any = info.value.body
    assert body["code"] == "all_providers_failed"
    assert "down1" in body["message"] and "down2" in body["message"]
    assert "first is down" in body["message"] and "second is down" in body["message"]


def test_connection_refused_is_502_without_the_upstream_url(client: openai.OpenAI, gw: Gateway) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="fault-refused", messages=HELLO)
    assert info.value.status_code == 502
    assert "127.0.0.1" not in info.value.message and "http://" not in info.value.message
    assert "refused" in info.value.message


def test_upstream_credentials_never_leak(client: openai.OpenAI, gw: Gateway, fault: FaultServer) -> None:
    fault.scenario("denied", Status(401, message=f"Incorrect API key provided: {SECRET}"))
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="fault-denied", messages=HELLO)
    # the gateway's upstream key failed: a 502 for the caller, not an AuthenticationError about *their* key
    assert info.value.status_code == 502
    assert info.value.response.json()["error"]["code"] == "upstream_authentication_error"
    assert SECRET not in info.value.response.text
    upstream = fault.requests("denied")[-1]
    assert upstream.headers["authorization"] == f"Bearer {SECRET}"
    wait_until(lambda: "denied" in gw.log_text(), 10, what="the failure in the gateway log")
    assert SECRET not in gw.log_text()


def test_unknown_model_goes_to_the_default_chain(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert info.value.code == "model_not_found"


# -- request validation and the SSRF guard -------------------------------------------------------------------------


def test_invalid_parameters_get_the_librarys_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="fault-ok", messages=HELLO, temperature=5)
    assert info.value.param == "temperature"
    assert info.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="fault-ok", messages=[{"role": "wizard", "content": "hi"}])
    assert info.value.param == "messages[0].role"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'{"model": "fault-ok", "messages": [', "could not parse the JSON body"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"model": "fault-ok"}', "messages"),
        (b'{"messages": []}', "model"),
        (b"", "could not parse"),
    ],
)
def test_bad_bodies_get_a_clear_400(gw: Gateway, content: bytes, needle: str) -> None:
    r = httpx.post(f"{gw.base_url}/chat/completions", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert needle in error["message"] and error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "field",
    ["provider", "base_url", "api_key", "proxy", "extra_headers", "extra_query", "timeout", "hedge_after", "proxies"],
)
def test_fields_that_steer_upstream_are_refused(client: openai.OpenAI, fault: FaultServer, field: str) -> None:
    fault.scenario("ok", Ok())
    before = len(fault.requests("ok"))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="fault-ok", messages=HELLO, extra_body={field: "http://169.254.169.254/latest/meta-data"}
        )
    assert info.value.param == field
    assert info.value.code == "unsupported_parameter"
    assert len(fault.requests("ok")) == before  # nothing was sent anywhere


def test_vendor_parameters_reach_upstream_but_the_clients_key_does_not(
    client: openai.OpenAI, fault: FaultServer
) -> None:
    fault.scenario("ok", Ok(text="fine"))
    client.chat.completions.create(
        model="fault-ok", messages=HELLO, temperature=0.5, extra_body={"top_k": 5}, extra_headers={"x-steer": "no"}
    )
    upstream = fault.requests("ok")[-1]
    assert upstream.body["top_k"] == 5 and upstream.body["temperature"] == 0.5
    assert upstream.body["model"] == "fault-ok"
    assert "authorization" not in upstream.headers  # the provider has no key; the client's is never forwarded
    assert "x-steer" not in upstream.headers


# -- disconnects, guards, endpoints --------------------------------------------------------------------------------


def test_client_disconnect_cancels_the_upstream_request(gw: Gateway, fault: FaultServer) -> None:
    fault.scenario("stall", Stall(after_chunks=2))
    body = {"model": "fault-stall", "messages": HELLO, "stream": True}
    with httpx.Client(timeout=30) as http, http.stream("POST", f"{gw.base_url}/chat/completions", json=body) as r:
        assert r.status_code == 200
        seen = b""
        for data in r.iter_raw():
            seen += data
            if seen.count(b'"content":"') >= 2 and b"beta" in seen:
                break
    # the client hung up mid-stream: the gateway closes its upstream connection
    record = fault.requests("stall")[-1]
    wait_until(lambda: record.closed is not None, 10, what="the upstream connection to close")

    def idle() -> bool:
        text = httpx.get(f"{gw.url}/metrics").text
        return metric_value(text, "polychat_gateway_in_flight", stream="true") == 0

    wait_until(idle, 10, what="no request in flight")
    text = httpx.get(f"{gw.url}/metrics").text
    assert (metric_value(text, "polychat_gateway_requests_total", route="fault-stall", status="499") or 0) >= 1


def test_client_giving_up_before_the_answer_cancels_the_upstream_request(gw: Gateway, fault: FaultServer) -> None:
    fault.scenario("hang", Stall())  # the upstream never answers
    with pytest.raises(httpx.ReadTimeout):  # the client gives up waiting and hangs up
        httpx.post(
            f"{gw.base_url}/chat/completions",
            json={"model": "fault-hang", "messages": HELLO},
            timeout=httpx.Timeout(10, read=0.5),
        )
    record = fault.requests("hang")[-1]
    wait_until(lambda: record.closed is not None, 10, what="the upstream connection to close")


def test_host_and_origin_guards_without_keys(gw: Gateway) -> None:
    r = httpx.get(f"{gw.base_url}/models", headers={"host": "attacker.example"})
    assert r.status_code == 421  # DNS rebinding: a foreign name pointing at 127.0.0.1
    r = httpx.get(f"{gw.base_url}/models", headers={"host": f"localhost:{gw.port}"})
    assert r.status_code == 200
    r = httpx.post(
        f"{gw.base_url}/chat/completions",
        content=json.dumps({"model": "fault-ok", "messages": HELLO}),
        headers={"origin": "http://attacker.example", "content-type": "text/plain"},
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed"
    r = httpx.get(f"{gw.base_url}/models", headers={"origin": gw.url})  # same origin: the chat page
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers


def test_small_endpoints(gw: Gateway) -> None:
    r = httpx.get(f"{gw.url}/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = httpx.get(f"{gw.base_url}/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"
    r = httpx.get(f"{gw.base_url}/chat/completions")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    page = httpx.get(f"{gw.url}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        assert httpx.get(f"{gw.url}/static/{name}").status_code == 200
    assert httpx.get(f"{gw.url}/static/../app.py").status_code == 404


def test_metrics_exposition(gw: Gateway, client: openai.OpenAI, fault: FaultServer) -> None:
    fault.scenario("ok", Ok(text="a b c"))
    list(client.chat.completions.create(model="fault-ok", messages=HELLO, stream=True))
    fault.scenario("boom", Status(500))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="fault-boom", messages=HELLO)
    r = httpx.get(f"{gw.url}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    sample = re.compile(r'^[a-z_]+(\{([a-z_]+="(?:[^"\\]|\\.)*",?)*\})? -?[0-9.e+]+$')
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line
    assert (
        metric_value(text, "polychat_gateway_requests_total", route="fault-ok", provider="ok", stream="true") or 0
    ) >= 1
    assert metric_value(text, "polychat_gateway_time_to_first_token_seconds_count", route="fault-ok", provider="ok")
    assert (metric_value(text, "polychat_gateway_errors_total", provider="boom", error="InternalServerError") or 0) >= 1
    assert metric_value(text, "polychat_gateway_request_duration_seconds_bucket", route="fault-ok", le="+Inf")
    assert metric_value(text, "polychat_breaker_state", provider="boom") is not None
    assert "http://" not in text and SECRET not in text


# -- separately started gateways -----------------------------------------------------------------------------------


def test_no_config_serves_the_embedded_model() -> None:
    with Gateway() as gateway, openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0) as client:
        assert [m.id for m in client.models.list()] == ["smollm2-135m"]
        raw = client.chat.completions.with_raw_response.create(
            model="smollm2-135m", messages=HELLO, max_tokens=6, stream=True, stream_options={"include_usage": True}
        )
        assert raw.headers["x-polychat-provider"] == "Local"
        chunks = list(raw.parse())
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].usage is not None


def test_auth_required_and_enforced(fault: FaultServer) -> None:
    fault.scenario("ok", Ok(text="authorised"))
    keys = {"POLYCHAT_API_KEYS": "key-one-1234567890, key-two-0987654321"}
    with Gateway(config_text=gateway_config(fault, None), env=keys) as gateway:
        r = httpx.post(f"{gateway.base_url}/chat/completions", json={"model": "fault-ok", "messages": HELLO})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert r.headers["www-authenticate"].startswith("Bearer")
        for key in ("wrong-key", "key-one-1234567890x", "key-one"):
            with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as c:
                with pytest.raises(openai.AuthenticationError):
                    c.chat.completions.create(model="fault-ok", messages=HELLO)
                with pytest.raises(openai.AuthenticationError):
                    c.models.list()
        for key in ("key-one-1234567890", "key-two-0987654321"):
            with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as c:
                assert c.chat.completions.create(model="fault-ok", messages=HELLO).choices[0].message.content
        assert fault.requests("ok")[-1].headers.get("authorization") is None  # gateway keys stay at the gateway
        assert httpx.get(f"{gateway.url}/health").status_code == 200
        assert httpx.get(f"{gateway.url}/").status_code == 200
        assert httpx.get(f"{gateway.url}/metrics").status_code == 401
        ok = httpx.get(f"{gateway.url}/metrics", headers={"authorization": "Bearer key-two-0987654321"})
        assert ok.status_code == 200
        assert "key-one" not in ok.text and "key-two" not in ok.text
        # with keys, any Host name is fine (a reverse proxy may use one)
        r = httpx.get(
            f"{gateway.base_url}/models",
            headers={"host": "gateway.example", "authorization": "Bearer key-one-1234567890"},
        )
        assert r.status_code == 200
        assert "key-one-1234567890" not in gateway.log_text()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_refuses_to_start_on_a_public_address_without_keys(host: str) -> None:
    done = run_serve(["--host", host, "--port", str(free_port())])
    assert done.returncode == 2
    assert "refusing to listen" in done.stderr
    assert "POLYCHAT_API_KEYS" in done.stderr and "--insecure" in done.stderr
    assert "Uvicorn running" not in done.stderr


def test_bind_rule() -> None:
    from polychat.server._settings import UnsafeBindError, check_bind, is_loopback

    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert is_loopback(host)
        check_bind(host, have_keys=False, insecure=False)
    for host in ("0.0.0.0", "::", "10.0.0.5", "example.com"):
        assert not is_loopback(host)
        with pytest.raises(UnsafeBindError):
            check_bind(host, have_keys=False, insecure=False)
        check_bind(host, have_keys=True, insecure=False)
        check_bind(host, have_keys=False, insecure=True)


def test_body_size_limit_and_cors(fault: FaultServer) -> None:
    fault.scenario("ok", Ok(text="small enough"))
    args = ["--max-body-size", "2048", "--cors-origin", "http://app.example"]
    with Gateway(config_text=gateway_config(fault, None), args=args) as gateway:
        url = f"{gateway.base_url}/chat/completions"
        big = {"model": "fault-ok", "messages": [{"role": "user", "content": "x" * 4000}]}
        r = httpx.post(url, json=big)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

        def chunked() -> Iterator[bytes]:  # no Content-Length: the limit applies as the body arrives
            yield b'{"model": "fault-ok", "messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}]}'

        r = httpx.post(url, content=chunked(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        with openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0) as c:
            with pytest.raises(openai.APIStatusError) as info:
                c.chat.completions.create(model="fault-ok", messages=big["messages"])
            assert info.value.status_code == 413
            assert c.chat.completions.create(model="fault-ok", messages=HELLO).choices[0].message.content

        # CORS: closed except for the configured origin
        pre = {"access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type"}
        r = httpx.options(url, headers={"origin": "http://app.example", **pre})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://app.example"
        r = httpx.options(url, headers={"origin": "http://attacker.example", **pre})
        assert r.headers.get("access-control-allow-origin") is None
        r = httpx.post(url, json={"model": "fault-ok", "messages": HELLO}, headers={"origin": "http://app.example"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "http://app.example"
        assert "x-polychat-provider" in r.headers["access-control-expose-headers"]
        r = httpx.post(
            url, json={"model": "fault-ok", "messages": HELLO}, headers={"origin": "http://attacker.example"}
        )
        assert r.status_code == 403


def test_graceful_shutdown_ends_requests_in_bounded_time(fault: FaultServer) -> None:
    fault.scenario("stall", Stall(after_chunks=2))  # a stream that never finishes
    fault.scenario("slow", Ok(text="one two three four five six", delay_between=0.1))  # one that finishes in time
    fault.scenario("hang", Stall())  # a non-stream request whose upstream never answers
    gateway = Gateway(config_text=gateway_config(fault, None), args=["--shutdown-timeout", "2"])
    results: dict[str, bytes] = {}
    started = {name: threading.Event() for name in ("stall", "slow")}

    def consume(name: str) -> None:
        body = {"model": f"fault-{name}", "messages": HELLO, "stream": True}
        seen = b""
        try:
            with httpx.stream("POST", f"{gateway.base_url}/chat/completions", json=body, timeout=30) as r:
                for data in r.iter_raw():
                    seen += data
                    if b'"content":"one"' in seen or b'"content":"alpha"' in seen:
                        started[name].set()
        except httpx.HTTPError as e:
            seen += f"\n[transport error: {e!r}]".encode()
        finally:
            started[name].set()
            results[name] = seen

    def wait_whole() -> None:
        try:
            r = httpx.post(
                f"{gateway.base_url}/chat/completions", json={"model": "fault-hang", "messages": HELLO}, timeout=30
            )
            results["hang"] = b"%d " % r.status_code + r.content
        except httpx.HTTPError as e:
            results["hang"] = f"[transport error: {e!r}]".encode()

    threads = [threading.Thread(target=consume, args=(n,)) for n in started]
    threads.append(threading.Thread(target=wait_whole))
    try:
        for t in threads:
            t.start()
        for event in started.values():
            assert event.wait(30)
        wait_until(lambda: fault.requests("hang"), 30, what="the non-stream request to reach the upstream")
        gateway.terminate()
        # uvicorn re-raises the signal once it has shut down gracefully, so the exit status says "SIGTERM"
        assert gateway.wait_exit(20) in (0, -signal.SIGTERM)
        for t in threads:
            t.join(10)
    finally:
        gateway.stop()
    # the slow stream finished within the grace period; the stalled one ended with an error frame, no hang
    assert sse_frames(results["slow"])[-1] == b"[DONE]"
    frames = sse_frames(results["stall"])
    assert json.loads(frames[-1])["error"]["code"] == "server_shutdown"
    assert b"[DONE]" not in frames
    # the request still waiting for its answer got a 503 (which the openai client retries, e.g. on another replica)
    status, _, body = results["hang"].partition(b" ")
    assert status == b"503" and json.loads(body)["error"]["code"] == "server_shutdown"
    assert "Finished server process" in gateway.log_text()


def test_workers(fault: FaultServer) -> None:
    fault.scenario("ok", Ok(text="from a worker"))
    with Gateway(config_text=gateway_config(fault, None), args=["--workers", "2"]) as gateway:
        with openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0) as c:
            for _ in range(4):
                assert c.chat.completions.create(model="fault-ok", messages=HELLO).choices[0].message.content
            assert "fault-ok" in [m.id for m in c.models.list()]
        gateway.terminate()
        assert gateway.wait_exit(30) in (0, -signal.SIGTERM)


def test_import_polychat_loads_no_server_framework() -> None:
    code = (
        "import sys, polychat, polychat.server, polychat.cli; polychat.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn', 'fastapi')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
