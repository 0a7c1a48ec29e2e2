"""One conformance suite: the same scenarios, the same assertions, for every adapter — and for a real server.

Each adapter (Anthropic, Gemini, Ollama, OpenaiChat and every registry preset) talks through its real HTTP path to
``tests/support/wire.py``, which replays the recorded fixtures of ``tests/fixtures/wire/<protocol>/`` byte for byte
and records what it received. Every scenario checks both directions: the request polychat sent equals the
request fixture (as JSON), and the answer reaches the caller in OpenAI's shape. Calls go through ``Client`` /
``AsyncClient`` exactly as a user makes them (``max_retries=0``), once per flavour.

Scenarios: plain text, stream (split per event and every 3 bytes), system prompt, tool call round trip (stream and
not), JSON mode, image input, error mapping (400, auth, 404, 429 with its delay, overloaded), an error event after
the 200, and an interrupted or truncated stream. A feature an adapter cannot honour is asserted to be refused
before anything is sent, naming the parameter. The last tests run the same scenarios against the real llama.cpp
server (``python -m llama_cpp.server`` with SmolLM2), with assertions about shape instead of exact text.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from polychat import AsyncClient, Client, errors
from polychat.providers import registry
from polychat.providers._convert import UnsupportedParameterError
from polychat.providers.anthropic import Anthropic
from polychat.providers.base import Provider
from polychat.providers.gemini import Gemini
from polychat.providers.ollama import Ollama
from polychat.providers.openai import OpenaiChat
from polychat.types import ChatCompletion, ChatCompletionChunk
from tests.support.wire import FIXTURES, CuttingRelay, Reply, WireServer

KEY = "sk-test-0123456789abcdef"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
TEXT = "Hello! How can I help you today?"
PIRATE = "Ahoy! How can I help ye today?"
ANSWER = "It is 11 °C in Paris right now."
Q = "What is the weather in Paris?"
TOOL_RESULT = '{"temperature": 11, "unit": "celsius"}'
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "The city, e.g. Paris"}},
                "required": ["city"],
            },
        },
    }
]
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temperature": {"type": "number"}},
    "required": ["city", "temperature"],
}
JSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA}}
IMAGE_MSG = {
    "role": "user",
    "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}},
    ],
}


@dataclass(frozen=True)
class Case:
    id: str
    protocol: str  # fixture directory
    make: Callable[[str], Provider]
    model: str
    path: str
    stream_path: str
    auth: tuple[str, str]
    finish_marker: bytes  # bytes on the first line of the frame that ends a stream
    query: dict[str, str] = field(default_factory=dict)
    stream_query: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    retry_header: bool = True
    refuses: dict[str, str] = field(default_factory=dict)  # scenario -> parameter refused before sending
    #: The preset's documented rewrites applied to a request fixture (e.g. null content sent as "").
    expect: Callable[[Any], Any] = lambda body: body


_STATUSES = {"error_400": 400, "error_auth": 401, "error_404": 404, "error_429": 429, "error_overloaded": 503}
_OPENAI_PATH = "/chat/completions"


def _preset(name: str) -> Case:
    refuses: dict[str, str] = {}
    preset = registry.PRESETS[name]
    if "tools" in preset.unsupported:
        refuses.update(tool_call="tools", tool_call_stream="tools")
    check = preset.checks.get("response_format")
    if check is not None and check(JSON_FORMAT) is not None:
        refuses["json_mode"] = "response_format"
    if not preset.capabilities.vision:
        refuses["image"] = "messages[0].content[1]"
    azure = name == "azure"

    def expect(body: Any) -> Any:
        if preset.null_content:
            for m in body["messages"]:
                if m["role"] == "assistant" and m.get("content") is None:
                    m["content"] = ""
        return body

    path = "/deployments/gpt-4o-mini/chat/completions" if azure else _OPENAI_PATH
    query = {"api-version": registry.AZURE_API_VERSION} if azure else {}
    return Case(
        name,
        "openai",
        lambda u: registry.provider(name, api_key=KEY, base_url=u),
        "gpt-4o-mini",
        path,
        path,
        ("api-key", KEY) if azure else ("authorization", f"Bearer {KEY}"),
        b'"finish_reason":"stop"',
        query=query,
        stream_query=query,
        refuses=refuses,
        expect=expect,
    )


CASES = [
    Case(
        "anthropic",
        "anthropic",
        lambda u: Anthropic(api_key=KEY, base_url=u),
        "claude-sonnet-4-5",
        "/v1/messages",
        "/v1/messages",
        ("x-api-key", KEY),
        b"event: message_delta",
        statuses={**_STATUSES, "error_overloaded": 529},
    ),
    Case(
        "gemini",
        "gemini",
        lambda u: Gemini(api_key=KEY, base_url=u),
        "gemini-2.5-flash",
        "/models/gemini-2.5-flash:generateContent",
        "/models/gemini-2.5-flash:streamGenerateContent",
        ("x-goog-api-key", KEY),
        b'"finishReason"',
        stream_query={"alt": "sse"},
        statuses={**_STATUSES, "error_auth": 400},
        retry_header=False,
    ),
    Case(
        "ollama",
        "ollama",
        lambda u: Ollama(api_key=KEY, base_url=u),
        "llama3.2",
        "/api/chat",
        "/api/chat",
        ("authorization", f"Bearer {KEY}"),
        b'"done": true',
    ),
    Case(
        "openai",
        "openai",
        lambda u: OpenaiChat(api_key=KEY, base_url=u),
        "gpt-4o-mini",
        _OPENAI_PATH,
        _OPENAI_PATH,
        ("authorization", f"Bearer {KEY}"),
        b'"finish_reason":"stop"',
    ),
    *(_preset(n) for n in registry.PRESETS),
]


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    param: Case = request.param
    return param


@pytest.fixture
def wire() -> Any:
    with WireServer() as server:
        yield server
    assert not server.handler_errors, f"wire server bugs: {server.handler_errors!r}"


# -- calling the way a user does ---------------------------------------------------------------------------------


@dataclass
class Result:
    completion: ChatCompletion | None = None
    chunks: list[ChatCompletionChunk] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def text(self) -> str:
        if self.completion is not None:
            return self.completion.content
        return "".join(c.choices[0].delta.content or "" for c in self.chunks if c.choices)

    def tool_calls(self) -> list[dict[str, str]]:
        if self.completion is not None:
            calls = self.completion.choices[0].message.tool_calls or []
            return [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in calls]
        joined: dict[int, dict[str, str]] = {}
        for chunk in self.chunks:
            for choice in chunk.choices:
                for d in choice.delta.tool_calls or ():
                    entry = joined.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                    entry["id"] += d.id or ""
                    entry["name"] += (d.function.name if d.function else None) or ""
                    entry["arguments"] += (d.function.arguments if d.function else None) or ""
        return [joined[i] for i in sorted(joined)]

    def finish_reason(self) -> str | None:
        if self.completion is not None:
            return self.completion.choices[0].finish_reason
        reasons = [ch.finish_reason for c in self.chunks for ch in c.choices if ch.finish_reason]
        return reasons[-1] if reasons else None


def call(flavour: str, provider: Provider, *, stream: bool = False, **kwargs: Any) -> Result:
    res = Result()
    kwargs.setdefault("messages", [{"role": "user", "content": "Hello"}])
    kwargs.setdefault("model", "")
    if flavour == "sync":
        with Client(provider=provider, max_retries=0) as client:
            try:
                r = client.chat.completions.create(stream=stream, **kwargs)
                if stream:
                    for c in r:  # type: ignore[union-attr]
                        res.chunks.append(c)
                else:
                    res.completion = r  # type: ignore[assignment]
            except errors.PolychatError as e:
                res.error = e
        return res

    async def go() -> None:
        async with AsyncClient(provider=provider, max_retries=0) as client:
            try:
                r = await client.chat.completions.create(stream=stream, **kwargs)
                if stream:
                    async for c in r:  # type: ignore[union-attr]
                        res.chunks.append(c)
                else:
                    res.completion = r  # type: ignore[assignment]
            except errors.PolychatError as e:
                res.error = e

    asyncio.run(go())
    return res


def fixture_json(case: Case, name: str) -> Any:
    return json.loads((FIXTURES / case.protocol / name).read_text())


def run_scenario(
    case: Case, wire: WireServer, flavour: str, scenario: str, reply: str, *, stream: bool = False, **kwargs: Any
) -> Result | None:
    """Serve ``reply`` for one call; check the request against ``<scenario>.request.json`` (when it exists).

    None when the adapter refused the scenario's feature before sending (checked here)."""
    base = wire.scenario(scenario, Reply.fixture(case.protocol, reply))
    res = call(flavour, case.make(base), stream=stream, model=case.model, **kwargs)
    if scenario in case.refuses:
        assert isinstance(res.error, UnsupportedParameterError), res.error
        assert res.error.param == case.refuses[scenario] and provider_name(case) in str(res.error)
        assert wire.requests(scenario) == [], "nothing may be sent when a parameter is refused"
        return None  # refused before sending, as the adapter's capabilities say: that is its conformance
    (rec,) = wire.requests(scenario)
    assert rec.method == "POST"
    assert rec.path == (case.stream_path if stream else case.path)
    assert rec.query == (case.stream_query if stream else case.query)
    assert rec.headers.get(case.auth[0]) == case.auth[1]
    if KEY not in case.auth[1]:
        raise AssertionError("the key must travel in its header")
    assert KEY not in rec.path and KEY not in json.dumps(rec.query)
    request_file = FIXTURES / case.protocol / f"{scenario}.request.json"
    if request_file.exists():
        assert rec.json() == case.expect(fixture_json(case, request_file.name))
    return res


def assert_ok(res: Result | None, provider_name: str) -> None:
    assert res is not None
    assert res.error is None, repr(res.error)
    objs = [res.completion] if res.completion is not None else res.chunks
    assert objs and all(o.provider == provider_name for o in objs)


def provider_name(case: Case) -> str:
    return case.make("http://127.0.0.1:1").name


# -- the scenarios -----------------------------------------------------------------------------------------------


def test_plain_text(case: Case, wire: WireServer, flavour: str) -> None:
    res = run_scenario(case, wire, flavour, "text", "text.response.json")
    assert res is not None
    assert_ok(res, provider_name(case))
    assert res.text == TEXT and res.finish_reason() == "stop"
    assert res.completion is not None and res.completion.usage is not None
    assert (res.completion.usage.prompt_tokens, res.completion.usage.completion_tokens) == (10, 9)
    assert res.completion.usage.total_tokens == 19


@pytest.mark.parametrize("split", [None, 3], ids=["per-event", "3-bytes"])
def test_stream(case: Case, wire: WireServer, flavour: str, split: int | None) -> None:
    name = "stream.response." + ("ndjson" if case.protocol == "ollama" else "sse")
    base = wire.scenario("stream", Reply.fixture(case.protocol, name, split=split))
    res = call(flavour, case.make(base), stream=True, model=case.model, stream_options={"include_usage": True})
    assert_ok(res, provider_name(case))
    (rec,) = wire.requests("stream")
    assert rec.path == case.stream_path and rec.query == case.stream_query
    assert rec.json() == case.expect(fixture_json(case, "stream.request.json"))
    assert res.text == TEXT and res.finish_reason() == "stop"
    assert res.chunks[0].choices[0].delta.role == "assistant"
    last = res.chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (10, 9, 19)


def test_system_prompt(case: Case, wire: WireServer, flavour: str) -> None:
    messages = [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hello"}]
    res = run_scenario(case, wire, flavour, "system", "system.response.json", messages=messages)
    assert res is not None
    assert_ok(res, provider_name(case))
    assert res.text == PIRATE


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_tool_call_round_trip(case: Case, wire: WireServer, flavour: str, stream: bool) -> None:
    scenario = "tool_call_stream" if stream else "tool_call"
    ext = ("ndjson" if case.protocol == "ollama" else "sse") if stream else "json"
    ask = [{"role": "user", "content": Q}]
    res = run_scenario(
        case, wire, flavour, scenario, f"{scenario}.response.{ext}", stream=stream, messages=ask, tools=TOOLS
    )
    if res is None:
        return
    assert_ok(res, provider_name(case))
    assert res.finish_reason() == "tool_calls"
    (tc,) = res.tool_calls()
    assert tc["name"] == "get_weather" and json.loads(tc["arguments"]) == {"city": "Paris"} and tc["id"]
    # Second turn: the assistant's tool call as the caller echoes it, then the tool's result.
    assistant = {
        "role": "assistant",
        "content": res.text or None,
        "tool_calls": [
            {"id": tc["id"], "type": "function", "function": {"name": tc["name"], "arguments": tc["arguments"]}}
        ],
    }
    if case.protocol == "openai":  # the request fixture holds the arguments as the fixture's answer spelled them
        assistant["tool_calls"][0]["function"]["arguments"] = '{"city":"Paris"}'
    turn2 = [*ask, assistant, {"role": "tool", "tool_call_id": tc["id"], "content": TOOL_RESULT}]
    wire.received.clear()
    res2 = run_scenario(case, wire, flavour, "tool_result", "tool_result.response.json", messages=turn2, tools=TOOLS)
    assert res2 is not None
    assert_ok(res2, provider_name(case))
    assert res2.text == ANSWER and res2.finish_reason() == "stop"


def test_json_mode(case: Case, wire: WireServer, flavour: str) -> None:
    messages = [{"role": "user", "content": "What is the weather in Paris? Answer in JSON."}]
    res = run_scenario(
        case, wire, flavour, "json_mode", "json_mode.response.json", messages=messages, response_format=JSON_FORMAT
    )
    if res is None:
        return
    assert_ok(res, provider_name(case))
    assert json.loads(res.text) == {"city": "Paris", "temperature": 11}
    assert res.finish_reason() == "stop"


def test_image_input(case: Case, wire: WireServer, flavour: str) -> None:
    res = run_scenario(case, wire, flavour, "image", "image.response.json", messages=[IMAGE_MSG])
    if res is None:
        return
    assert_ok(res, provider_name(case))
    assert res.text == "A single red pixel."


ERRORS = [
    ("error_400", errors.BadRequestError, 400),
    ("error_auth", errors.AuthenticationError, 401),
    ("error_404", errors.NotFoundError, 404),
    ("error_429", errors.RateLimitError, 429),
    ("error_overloaded", errors.InternalServerError, None),
]


@pytest.mark.parametrize(("scenario", "cls", "status"), ERRORS, ids=[e[0] for e in ERRORS])
def test_error_mapping(
    case: Case, wire: WireServer, flavour: str, scenario: str, cls: type, status: int | None
) -> None:
    sent = case.statuses.get(scenario, _STATUSES[scenario])
    headers = {"retry-after": "7"} if scenario == "error_429" and case.retry_header else {}
    base = wire.scenario(
        scenario, Reply.fixture(case.protocol, f"{scenario}.response.json", status=sent, headers=headers)
    )
    res = call(flavour, case.make(base), model=case.model)
    err = res.error
    assert type(err) is cls, repr(err)
    assert isinstance(err, errors.APIStatusError)
    assert err.status_code == (status or sent) and err.provider == provider_name(case)
    assert err.message and KEY not in str(err)
    assert err.retryable == (cls in (errors.RateLimitError, errors.InternalServerError))
    if scenario == "error_429":
        assert err.retry_after == 7.0
    assert len(wire.requests(scenario)) == 1


def test_error_event_after_200(case: Case, wire: WireServer, flavour: str) -> None:
    name = "stream_error.response." + ("ndjson" if case.protocol == "ollama" else "sse")
    base = wire.scenario("stream_error", Reply.fixture(case.protocol, name))
    res = call(flavour, case.make(base), stream=True, model=case.model)
    err = res.error
    assert isinstance(err, errors.StreamInterruptedError), repr(err)
    assert err.partial == "Hello!" and res.text == "Hello!"
    assert isinstance(err.cause, errors.InternalServerError) and err.cause.retryable
    expected = {"anthropic": 529, "gemini": 503}.get(case.protocol, 500)
    assert err.cause.status_code == expected


@pytest.mark.parametrize("how", ["reset", "truncated"])
def test_interrupted_stream(case: Case, wire: WireServer, flavour: str, how: str) -> None:
    name = "stream.response." + ("ndjson" if case.protocol == "ollama" else "sse")
    body = (FIXTURES / case.protocol / name).read_bytes()
    if how == "reset":
        reply = Reply.fixture(case.protocol, name, cut_after=body.index(b" you today?") + 4)
    else:
        reply = Reply.fixture(case.protocol, name, truncate=body.rfind(b"\n", 0, body.index(case.finish_marker)) + 1)
    base = wire.scenario("interrupted", reply)
    res = call(flavour, case.make(base), stream=True, model=case.model)
    err = res.error
    assert isinstance(err, errors.StreamInterruptedError), repr(err)
    assert err.partial == res.text and err.partial and TEXT.startswith(err.partial)
    assert isinstance(err.cause, errors.APIConnectionError)
    assert res.finish_reason() is None


# -- the same scenarios against the real llama.cpp server --------------------------------------------------------


def real(llama_server: Any, **overrides: Any) -> Provider:
    overrides.setdefault("base_url", llama_server.base_url)
    return registry.provider("llama-cpp-python", **overrides)


def _real_call(flavour: str, provider: Provider, **kwargs: Any) -> Result:
    kwargs.setdefault("max_tokens", 24)
    kwargs.setdefault("temperature", 0)
    return call(flavour, provider, model="smollm2-135m", **kwargs)


@pytest.mark.llama
def test_real_plain_text_and_system(llama_server: Any, flavour: str) -> None:
    p = real(llama_server)
    for messages in (
        [{"role": "user", "content": "Hello"}],
        [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hello"}],
    ):
        res = _real_call(flavour, p, messages=messages)
        assert_ok(res, p.name)
        assert res.text.strip() and res.finish_reason() in ("stop", "length")
        assert res.completion is not None and res.completion.usage and res.completion.usage.completion_tokens > 0


@pytest.mark.llama
def test_real_stream(llama_server: Any, flavour: str) -> None:
    p = real(llama_server)
    res = _real_call(flavour, p, stream=True, stream_options={"include_usage": True})
    assert_ok(res, p.name)
    assert res.text.strip() and res.finish_reason() in ("stop", "length")


@pytest.mark.llama
def test_real_tool_call_round_trip(llama_server: Any, flavour: str) -> None:
    p = real(llama_server)
    ask = [{"role": "user", "content": Q}]
    forced = {"type": "function", "function": {"name": "get_weather"}}
    res = _real_call(flavour, p, messages=ask, tools=TOOLS, tool_choice=forced)
    assert_ok(res, p.name)
    (tc,) = res.tool_calls()
    assert tc["name"] == "get_weather" and isinstance(json.loads(tc["arguments"]), dict)
    assistant = {
        "role": "assistant",
        "content": res.completion.content if res.completion else None,
        "tool_calls": [
            {"id": tc["id"], "type": "function", "function": {"name": tc["name"], "arguments": tc["arguments"]}}
        ],
    }
    turn2 = [*ask, assistant, {"role": "tool", "tool_call_id": tc["id"], "content": TOOL_RESULT}]
    res2 = _real_call(flavour, p, messages=turn2, tools=TOOLS)
    assert_ok(res2, p.name)
    assert res2.text.strip()


@pytest.mark.llama
def test_real_json_mode(llama_server: Any, flavour: str) -> None:
    p = real(llama_server)
    messages = [{"role": "user", "content": "What is the weather in Paris? Answer in JSON."}]
    res = _real_call(flavour, p, messages=messages, response_format={"type": "json_object"}, max_tokens=48)
    assert_ok(res, p.name)
    if res.finish_reason() == "stop":
        json.loads(res.text)
    else:  # cut by max_tokens: still JSON so far (grammar-constrained)
        assert res.text.lstrip().startswith("{")
    refused = _real_call(flavour, p, messages=messages, response_format=JSON_FORMAT)
    assert isinstance(refused.error, UnsupportedParameterError) and refused.error.param == "response_format"


@pytest.mark.llama
def test_real_image_input_reaches_the_server_and_fails_cleanly(llama_server: Any, flavour: str) -> None:
    # SmolLM2 is a text-only model: the server rejects image parts with a 500, which must arrive as polychat's class.
    p = real(llama_server)
    res = _real_call(flavour, p, messages=[IMAGE_MSG])
    assert isinstance(res.error, errors.InternalServerError) and res.error.status_code == 500


@pytest.mark.llama
def test_real_error_mapping(llama_server: Any, flavour: str) -> None:
    res = _real_call(flavour, real(llama_server, base_url=llama_server.url + "/nowhere"))
    assert isinstance(res.error, errors.NotFoundError) and res.error.status_code == 404
    res = _real_call(flavour, real(llama_server), extra_body={"temperature": "hot"})
    assert isinstance(res.error, errors.InternalServerError) and "temperature" in res.error.message


@pytest.mark.llama
def test_real_interrupted_stream(llama_server: Any, flavour: str) -> None:
    host, port = llama_server.host, llama_server.port
    with CuttingRelay(host, port, cut_after=1500) as relay:
        p = real(llama_server, base_url=relay.url + "/v1")
        res = _real_call(flavour, p, stream=True, max_tokens=48)
    err = res.error
    assert relay.cuts == 1 and res.text, "content arrives before the cut"
    assert isinstance(err, errors.StreamInterruptedError) and err.partial == res.text
    assert isinstance(err.cause, errors.APIConnectionError)


def test_every_fixture_is_used() -> None:
    used = {"text", "stream", "system", "tool_call", "tool_call_stream", "tool_result", "json_mode", "image"}
    used |= {e[0] for e in ERRORS} | {"stream_error"}
    for directory in ("anthropic", "gemini", "ollama", "openai"):
        names = {p.name.split(".")[0] for p in Path(FIXTURES, directory).iterdir()}
        assert names == used, (directory, names ^ used)


# -- failover across protocols in one chain ----------------------------------------------------------------------


def _chain(*members: Provider) -> Any:
    from polychat.routing import CircuitBreaker, RetryProvider

    return RetryProvider(list(members), max_retries=0, breaker=CircuitBreaker())


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_failover_anthropic_down_then_gemini(wire: WireServer, flavour: str, stream: bool) -> None:
    from polychat.providers import Local

    down = wire.scenario("anthropic", Reply.fixture("anthropic", "error_overloaded.response.json", status=529))
    ok = wire.scenario("gemini", Reply.fixture("gemini", "stream.response.sse" if stream else "text.response.json"))
    chain = _chain(Anthropic(api_key=KEY, base_url=down), Gemini(api_key=KEY, base_url=ok), Local())
    res = call(flavour, chain, stream=stream)
    assert_ok(res, "Gemini")
    assert res.text == TEXT
    assert [r.path for r in wire.requests()] == [
        "/v1/messages",
        "/models/gemini-2.5-flash:" + ("streamGenerateContent" if stream else "generateContent"),
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_failover_anthropic_and_gemini_down_then_local(wire: WireServer, flavour: str, stream: bool) -> None:
    from polychat.providers import Local

    busy = wire.scenario("gemini", Reply.fixture("gemini", "error_overloaded.response.json", status=503))
    refused = "http://127.0.0.1:9"  # nothing listens on the discard port
    chain = _chain(Anthropic(api_key=KEY, base_url=refused), Gemini(api_key=KEY, base_url=busy), Local())
    res = call(flavour, chain, stream=stream, max_tokens=8, temperature=0)
    assert_ok(res, "Local")
    assert res.text.strip()
    assert len(wire.requests("gemini")) == 1


@pytest.mark.parametrize("kind", ["gemini", "anthropic"])
def test_answers_without_an_upstream_id_get_one_id_scheme_streamed_or_not(kind: str) -> None:
    # Gemini has no id when responseId is missing, Anthropic when its proxy drops "id": never "" (streams never were).
    import json

    from polychat._request import build_request
    from polychat.providers.anthropic import Anthropic
    from polychat.providers.gemini import Gemini

    fixture = json.loads((FIXTURES / kind / "text.response.json").read_text())
    fixture.pop("responseId" if kind == "gemini" else "id")
    provider = Gemini(api_key="k") if kind == "gemini" else Anthropic(api_key="k")
    req, _ = build_request("m", [{"role": "user", "content": "Hi"}], False, {})
    ids = {provider.parse_completion(json.dumps(fixture).encode(), req).id for _ in range(2)}
    parser = provider.stream_parser(req)
    stream_id = parser.chunks.id
    assert all(i.startswith("chatcmpl-") and len(i) == len(stream_id) for i in ids) and len(ids) == 2, ids
