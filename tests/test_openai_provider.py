"""OpenaiChat over real HTTP: the real llama.cpp server for answers, the fault server for failures."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

import polychat
from polychat import AsyncClient, Client, errors
from polychat.providers import OpenaiChat
from polychat.types import ChatCompletion, ChatCompletionChunk
from tests.support.faults import (
    CloseBeforeHeaders,
    Empty,
    ErrorFrame,
    FaultServer,
    Malformed,
    Ok,
    Stall,
    Status,
    Truncate,
)
from tests.support.servers import LlamaServer, wait_until

MSGS = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def llama_client(llama_server: LlamaServer) -> Iterator[Client]:
    with Client(provider=OpenaiChat(base_url=llama_server.base_url)) as client:
        yield client


# -- the real llama.cpp server ---------------------------------------------------------------------------------


def test_non_stream(llama_client: Client) -> None:
    r = llama_client.chat.completions.create(model="gpt-3.5-turbo", messages=MSGS, max_tokens=8, temperature=0)
    assert isinstance(r, ChatCompletion)
    assert r.provider == "OpenaiChat"
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.completion_tokens <= 8 and r.usage.total_tokens > 0
    dumped = r.model_dump()
    assert dumped["choices"][0]["message"]["content"] == r.choices[0].message.content
    assert "provider" not in dumped
    assert json.loads(r.model_dump_json()) == dumped


def test_stream(llama_client: Client) -> None:
    stream = llama_client.chat.completions.create(model="gpt-3.5-turbo", messages=MSGS, max_tokens=12, stream=True)
    assert isinstance(stream, polychat.Stream)
    chunks = list(stream)
    assert all(isinstance(c, ChatCompletionChunk) and c.provider == "OpenaiChat" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    assert stream.provider == "OpenaiChat"
    assert len({c.id for c in chunks}) == 1


def test_stream_early_close_releases_the_connection(faults: FaultServer) -> None:
    url = faults.scenario("early", Stall(after_chunks=2), Ok(text="still works"))
    with Client(provider=OpenaiChat(base_url=url, api_key=""), max_retries=0) as client:
        stream = client.chat.completions.create(model="m", messages=MSGS, stream=True)
        with stream:
            first = next(stream)
            assert first.choices
        # Left early, the stream hangs up at once (a half-read response cannot go back to the pool)...
        rec = faults.requests("early")[0]
        wait_until(lambda: rec.closed is not None, timeout=10, what="the hang-up")
        # ...and the client still works.
        assert client.chat.completions.create(model="m", messages=MSGS).content == "still works"


def test_models_list(llama_client: Client, llama_server: LlamaServer) -> None:
    models = llama_client.models.list()
    assert models.object == "list"
    assert len(models.data) >= 1
    assert [m.id for m in models.data] == [llama_server.model]


@pytest.mark.anyio
async def test_async_non_stream_and_stream(llama_server: LlamaServer) -> None:
    async with AsyncClient(provider=OpenaiChat(base_url=llama_server.base_url)) as client:
        r = await client.chat.completions.create(model="m", messages=MSGS, max_tokens=8)
        assert isinstance(r, ChatCompletion) and r.provider == "OpenaiChat"
        assert r.choices[0].message.content
        stream = await client.chat.completions.create(
            model="m", messages=MSGS, max_tokens=8, stream=True, stream_options={"include_usage": True}
        )
        assert isinstance(stream, polychat.AsyncStream)
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
        # llama.cpp's server ignores include_usage (the fault server's usage chunk is checked below).
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        models = await client.models.list()
        assert models.data


@pytest.mark.anyio
async def test_async_usage_chunk_passes_through(faults: FaultServer) -> None:
    url = faults.scenario("usage", Ok(text="a b c"))
    async with AsyncClient(provider=OpenaiChat(base_url=url)) as client:
        stream = await client.chat.completions.create(
            model="m", messages=MSGS, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    assert chunks[-2].choices[0].finish_reason == "stop"


@pytest.mark.anyio
async def test_async_early_close(llama_server: LlamaServer) -> None:
    async with AsyncClient(provider=OpenaiChat(base_url=llama_server.base_url)) as client:
        stream = await client.chat.completions.create(model="m", messages=MSGS, max_tokens=64, stream=True)
        async with stream:
            async for _ in stream:
                break
        r = await client.chat.completions.create(model="m", messages=MSGS, max_tokens=4)
        assert r.choices


def test_create_helper_yields_text(llama_server: LlamaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", llama_server.base_url)
    parts = list(polychat.create("m", MSGS, stream=True, provider=OpenaiChat, max_tokens=8))
    assert "".join(parts).strip()
    whole = list(polychat.create("m", MSGS, stream=False, provider=OpenaiChat, max_tokens=8))
    assert len(whole) == 1 and whole[0]


# -- requests as sent --------------------------------------------------------------------------------------------


def test_parameters_are_sent_faithfully(faults: FaultServer) -> None:
    url = faults.scenario("echo", Ok())
    client = Client(provider=OpenaiChat(base_url=url, api_key="sk-test-123"), max_retries=0)
    params = dict(
        temperature=0.2,
        top_p=0.9,
        max_tokens=7,
        stop=["\n"],
        seed=3,
        n=1,
        user="u1",
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        tool_choice="auto",
        response_format={"type": "json_object"},
        presence_penalty=0.1,
        logit_bias={"1": 2},
    )
    client.chat.completions.create(
        model="gpt-x",
        messages=MSGS,
        extra_body={"top_k": 4},
        extra_headers={"x-trace": "t1"},
        extra_query={"api-version": "1"},
        **params,
    )
    rec = faults.requests("echo")[-1]
    assert rec.body == {"model": "gpt-x", "messages": MSGS, **params, "top_k": 4}
    assert rec.headers["authorization"] == "Bearer sk-test-123"
    assert rec.headers["x-trace"] == "t1"
    assert rec.path.endswith("/chat/completions?api-version=1")
    stream = client.chat.completions.create(
        model="gpt-x", messages=MSGS, stream=True, stream_options={"include_usage": True}
    )
    list(stream)
    rec = faults.requests("echo")[-1]
    assert rec.body["stream"] is True and rec.body["stream_options"] == {"include_usage": True}
    assert rec.headers["accept"] == "text/event-stream"


def test_client_api_key_and_base_url_apply_to_provider_classes(faults: FaultServer) -> None:
    url = faults.scenario("keys", Ok())
    client = Client(provider=OpenaiChat, api_key="sk-abc-999", base_url=url, max_retries=0)
    assert client.chat.completions.create(model="m", messages=MSGS).content
    assert faults.requests("keys")[-1].headers["authorization"] == "Bearer sk-abc-999"
    assert "sk-abc-999" not in repr(client)


def test_missing_key_for_official_endpoint_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    client = Client(provider=OpenaiChat, max_retries=0)
    with pytest.raises(errors.APIError, match="OPENAI_API_KEY"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)


# -- every error class ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (400, errors.BadRequestError),
        (401, errors.AuthenticationError),
        (403, errors.PermissionDeniedError),
        (404, errors.NotFoundError),
        (409, errors.ConflictError),
        (422, errors.UnprocessableEntityError),
        (429, errors.RateLimitError),
        (500, errors.InternalServerError),
        (503, errors.InternalServerError),
        (418, errors.APIStatusError),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_status_codes_map_to_openai_error_classes(faults: FaultServer, code: int, cls: type, stream: bool) -> None:
    url = faults.scenario("status", Status(code, headers={"x-request-id": "req-42"}, message=f"boom {code}"))
    client = Client(provider=OpenaiChat(base_url=url), max_retries=0)
    with pytest.raises(cls) as exc:
        r = client.chat.completions.create(model="m", messages=MSGS, stream=stream)
        if stream:
            list(r)  # type: ignore[arg-type]
    e = exc.value
    assert type(e) is cls
    assert e.status_code == code
    assert e.request_id == "req-42"
    assert e.provider == "OpenaiChat"
    assert e.message == f"boom {code}"
    assert e.body == {"error": {"message": f"boom {code}", "type": "injected", "param": None, "code": None}}
    assert isinstance(e, errors.APIError) and isinstance(e, errors.PolychatError)


@pytest.mark.anyio
async def test_async_status_error(faults: FaultServer) -> None:
    url = faults.scenario("astatus", Status(401))
    async with AsyncClient(provider=OpenaiChat(base_url=url), max_retries=0) as client:
        with pytest.raises(errors.AuthenticationError):
            await client.chat.completions.create(model="m", messages=MSGS)
        with pytest.raises(errors.AuthenticationError):
            await client.chat.completions.create(model="m", messages=MSGS, stream=True)


def test_connection_refused_is_api_connection_error() -> None:
    client = Client(provider=OpenaiChat(base_url="http://127.0.0.1:9/v1"), max_retries=0)
    with pytest.raises(errors.APIConnectionError, match=r"Could not connect to http://127\.0\.0\.1:9/v1"):
        client.chat.completions.create(model="m", messages=MSGS)


def test_close_before_headers_is_connection_error(faults: FaultServer) -> None:
    url = faults.scenario("close", CloseBeforeHeaders())
    client = Client(provider=OpenaiChat(base_url=url), max_retries=0)
    with pytest.raises(errors.APIConnectionError):
        client.chat.completions.create(model="m", messages=MSGS)


def test_read_timeout_is_api_timeout_error(faults: FaultServer) -> None:
    url = faults.scenario("stall", Stall())
    client = Client(provider=OpenaiChat(base_url=url), max_retries=0)
    with pytest.raises(errors.APITimeoutError, match="Timed out"):
        client.chat.completions.create(model="m", messages=MSGS, timeout=0.3)
    faults.release()


@pytest.mark.anyio
async def test_async_timeout(faults: FaultServer) -> None:
    url = faults.scenario("astall", Stall())
    async with AsyncClient(provider=OpenaiChat(base_url=url), max_retries=0, timeout=0.3) as client:
        with pytest.raises(errors.APITimeoutError):
            await client.chat.completions.create(model="m", messages=MSGS, stream=True)
    faults.release()


@pytest.mark.parametrize("stream", [False, True])
def test_error_frame_after_200_raises(faults: FaultServer, stream: bool) -> None:
    url = faults.scenario("frame", ErrorFrame(after_chunks=0, type="rate_limit_error", message="slow down"))
    client = Client(provider=OpenaiChat(base_url=url), max_retries=0)
    with pytest.raises(errors.RateLimitError, match="slow down"):
        r = client.chat.completions.create(model="m", messages=MSGS, stream=stream)
        if stream:
            list(r)  # type: ignore[arg-type]


@pytest.mark.parametrize("stream", [False, True])
def test_malformed_data_raises(faults: FaultServer, stream: bool) -> None:
    url = faults.scenario("bad", Malformed(after_chunks=0))
    client = Client(provider=OpenaiChat(base_url=url), max_retries=0)
    with pytest.raises(errors.APIConnectionError, match="Malformed"):
        r = client.chat.completions.create(model="m", messages=MSGS, stream=stream)
        if stream:
            list(r)  # type: ignore[arg-type]


def test_stream_without_done_or_finish_reason_is_truncated(faults: FaultServer) -> None:
    url = faults.scenario("trunc", Truncate(n=0))
    client = Client(provider=OpenaiChat(base_url=url), max_retries=0)
    with pytest.raises(errors.APIConnectionError, match="cut short"):
        list(client.chat.completions.create(model="m", messages=MSGS, stream=True))


def test_stream_with_finish_reason_but_no_done_is_complete(faults: FaultServer) -> None:
    url = faults.scenario("nodone", Ok(text="a b", send_done=False))
    client = Client(provider=OpenaiChat(base_url=url), max_retries=0)
    chunks = list(client.chat.completions.create(model="m", messages=MSGS, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "a b"


def test_bare_provider_returns_empty_answers_as_they_are(faults: FaultServer) -> None:
    url = faults.scenario("empty", Empty())
    client = Client(provider=OpenaiChat(base_url=url), max_retries=0)
    assert client.chat.completions.create(model="m", messages=MSGS).content == ""


def test_retries_of_a_single_provider(faults: FaultServer) -> None:
    url = faults.scenario("flaky", Status(503), Status(500), Ok(text="finally"))
    client = Client(provider=OpenaiChat(base_url=url), max_retries=2)
    assert client.chat.completions.create(model="m", messages=MSGS).content == "finally"
    assert [r.behaviour for r in faults.requests("flaky")] == ["Status", "Status", "Ok"]


def test_last_error_after_retries_carries_attempts(faults: FaultServer) -> None:
    url = faults.scenario("down", Status(502))
    client = Client(provider=OpenaiChat(base_url=url), max_retries=1)
    with pytest.raises(errors.InternalServerError) as exc:
        client.chat.completions.create(model="m", messages=MSGS)
    assert len(exc.value.attempts) == 2
