"""Local: the in-process llama.cpp provider, tested against the real shipped SmolLM2-135M model.

Every test keeps answers short (a handful of tokens) and all share one loaded model (the module's ``local``
fixture; ``Local()`` instances with the same file and settings share it). No network, and no sleeping to wait for
something: concurrency and cancellation are shown with the engine's events (a test holds the model's thread at a
known point: ``tests/support/local_engine.py``), token counters and the model's ``busy`` flag — never with how fast
this machine reads or generates.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from polychat import AsyncClient, Client
from polychat._request import PARAMS, build_request
from polychat.errors import (
    APIError,
    APITimeoutError,
    BadRequestError,
    ConfigError,
    InvalidRequestError,
    NotFoundError,
)
from polychat.providers import Local
from polychat.providers import local as local_module
from polychat.providers.local import _engine as local_engine
from polychat.providers.local import _feed as local_feed
from polychat.providers.local import _params as local_params
from polychat.types import ChatCompletion, ChatCompletionChunk
from tests.support.local_engine import HANG_GUARD, Hold

HI = [{"role": "user", "content": "What is 2+2?"}]
LONG = [{"role": "user", "content": "Tell me a long story about a dragon who learns to read."}]
GREEDY: dict[str, Any] = {"temperature": 0, "seed": 1}
#: What Local adds to a request that leaves them open, for comparisons with llama-cpp-python's own chat API.
SYSTEM = {"role": "system", "content": local_module.DEFAULT_SYSTEM_PROMPT}
DEFAULTS: dict[str, Any] = {"repeat_penalty": local_module.DEFAULT_REPEAT_PENALTY}


@pytest.fixture(scope="module")
def local() -> Local:
    return Local()


@pytest.fixture(scope="module")
def engine(local: Local) -> Any:
    return local._engine()


@pytest.fixture(scope="module")
def client(local: Local) -> Iterator[Client]:
    with Client(provider=local) as c:
        yield c


@pytest.fixture
def aclient(local: Local) -> AsyncClient:
    return AsyncClient(provider=local)


def content_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def complete(client: Client, **kwargs: Any) -> ChatCompletion:
    kwargs.setdefault("messages", HI)
    result = client.chat.completions.create(model=kwargs.pop("model", ""), **kwargs)
    assert isinstance(result, ChatCompletion)
    return result


# -- without loading ---------------------------------------------------------------------------------------------


def test_import_and_construction_load_nothing_and_llama_is_quiet() -> None:
    """A fresh process: importing and constructing load neither llama.cpp nor the model; using it prints nothing."""
    script = (
        "import sys\n"
        "import polychat\n"
        "from polychat.providers import Local\n"
        "local = Local()\n"
        "print([m.id for m in local.list_models(None)], local.describe()['loaded'], 'llama_cpp' in sys.modules)\n"
        "client = polychat.Client(provider=local)\n"
        "r = client.chat.completions.create(model='', messages=[{'role': 'user', 'content': 'Hi'}], max_tokens=2)\n"
        "print(r.provider, r.usage.completion_tokens, local.loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["['smollm2-135m'] False False", "Local 2 True"]
    assert out.stderr == ""  # llama.cpp's own logging is silenced


def test_list_models_and_describe_do_not_load() -> None:
    fresh = Local(n_ctx=1024)  # other settings: a model of its own, never used here
    models = fresh.list_models(None)
    assert [(m.id, m.owned_by) for m in models] == [("smollm2-135m", "local")]
    info = fresh.describe()
    assert info["model"] == "smollm2-135m" and info["model_path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert info["loaded"] is False and fresh.loaded is False
    assert fresh.default_model == "smollm2-135m"
    assert Local.capabilities.offline and Local.capabilities.json_mode and not Local.capabilities.tools


def test_models_list_through_client(client: Client) -> None:
    assert [m.id for m in client.models.list()] == ["smollm2-135m"]


def test_model_path_from_env_names_the_model_after_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local: Local
) -> None:
    assert local.model_path is not None
    link = tmp_path / "My-Model.Q4_1.gguf"
    link.symlink_to(local.model_path)
    monkeypatch.setenv("POLYCHAT_LOCAL_MODEL", str(link))
    other = Local()
    assert other.model_id == "my-model.q4_1" and other.default_model == "my-model.q4_1"
    assert [m.id for m in other.list_models(None)] == ["my-model.q4_1"]
    r = complete(Client(provider=other), model="My-Model.Q4_1.gguf", max_tokens=2)
    assert r.model == "my-model.q4_1" and r.usage is not None and r.usage.completion_tokens == 2
    monkeypatch.setenv("POLYCHAT_LOCAL_MODEL", str(tmp_path / "missing.gguf"))
    with pytest.raises(ConfigError, match="POLYCHAT_LOCAL_MODEL"):
        Local()


def test_every_openai_parameter_has_a_decision() -> None:
    """Each OpenAI parameter is honoured, accepted as harmless, or refused on purpose — none falls through."""
    assert set(PARAMS) <= set(local_params._PARAMS)


def test_stop_scanner_holds_back_what_may_start_a_stop_sequence() -> None:
    scanner = local_engine._StopScanner(("END", "<|x|>"))
    assert scanner.feed("Hello E") == ("Hello ", False)
    assert scanner.feed("N") == ("", False)
    assert scanner.feed("Dless") == ("", True)
    scanner = local_engine._StopScanner(("END",))
    assert scanner.feed("an EN") == ("an ", False)
    assert scanner.feed("emy") == ("ENemy", False)
    assert scanner.feed(" E") == (" ", False)
    assert scanner.flush() == "E"


# -- answers -----------------------------------------------------------------------------------------------------


def test_complete(client: Client) -> None:
    r = complete(client, max_tokens=16, **GREEDY)
    assert r.provider == "Local"
    assert r.model == "smollm2-135m" and r.id.startswith("chatcmpl-") and r.created > 0
    assert r.content.strip()
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@pytest.mark.parametrize(
    "messages",
    [LONG, [{"role": "user", "content": "¿Cuál es la capital de España?"}]],  # the second answer has an ñ
    ids=["english", "accents"],
)
def test_answer_matches_llama_cpp_chat_api(client: Client, engine: Any, messages: list[dict[str, str]]) -> None:
    """Same template, same sampling: the text and token counts of llama-cpp-python's create_chat_completion given
    Local's defaults (its system prompt and repeat penalty)."""

    def raw(llama: Any) -> Any:
        llama.reset()
        return llama.create_chat_completion([SYSTEM, *messages], max_tokens=24, temperature=0, seed=1, **DEFAULTS)

    expected = engine.call(raw)
    r = complete(client, messages=messages, max_tokens=24, **GREEDY)
    assert r.content == expected["choices"][0]["message"]["content"]
    assert r.choices[0].finish_reason == expected["choices"][0]["finish_reason"]
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (
        expected["usage"]["prompt_tokens"],
        expected["usage"]["completion_tokens"],
    )


def test_long_prompt_read_in_pieces_gives_the_same_answer(client: Client, engine: Any) -> None:
    """A prompt over 512 tokens is read piece by piece (cancellable); the answer is still llama.cpp's own."""
    messages = [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 55 + "Why?"}]

    def raw(llama: Any) -> Any:
        llama.reset()
        return llama.create_chat_completion([SYSTEM, *messages], max_tokens=8, temperature=0, seed=1, **DEFAULTS)

    expected = engine.call(raw)
    assert expected["usage"]["prompt_tokens"] > 512
    r = complete(client, messages=messages, max_tokens=8, **GREEDY)
    assert r.content == expected["choices"][0]["message"]["content"]


def test_model_names_accepted(client: Client) -> None:
    for model in ("", "smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        assert complete(client, model=model, max_tokens=1).provider == "Local"


def test_unknown_model_is_not_found_and_lists_what_is_served(client: Client) -> None:
    with pytest.raises(NotFoundError) as info:
        complete(client, model="gpt-4o", max_tokens=1)
    assert info.value.status_code == 404 and info.value.provider == "Local"
    assert "smollm2-135m" in str(info.value) and "gpt-4o" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
        ({"reasoning_effort": "high"}, "reasoning_effort"),
        ({"logit_bias": {"42": 5}}, "logit_bias"),
        ({"extra_body": {"guided_regex": "a+"}}, "extra_body.guided_regex"),
        ({"extra_body": {"top_k": -1}}, "extra_body.top_k"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, None),
    ],
)
def test_unsupported_parameter_is_refused_before_generating(
    client: Client, engine: Any, kwargs: dict[str, Any], param: str | None
) -> None:
    before = engine.tokens_generated
    with pytest.raises(BadRequestError) as info:
        complete(client, max_tokens=4, **kwargs)
    assert info.value.status_code == 400 and info.value.provider == "Local"
    assert not info.value.retryable
    assert isinstance(info.value, InvalidRequestError)  # also a ValueError naming it, like every provider's refusals
    if param is not None:
        assert info.value.param == param and param in str(info.value)
    assert engine.tokens_generated == before


def test_parameters_that_do_not_change_the_answer_are_accepted(client: Client) -> None:
    r = complete(
        client,
        max_tokens=2,
        n=1,
        user="u1",
        metadata={"k": "v"},
        store=False,
        logprobs=False,
        tool_choice="none",
        extra_headers={"X-Trace": "1"},
        extra_query={"api-version": "1"},
        extra_body={"top_k": 20, "min_p": 0.1, "repeat_penalty": 1.1},
    )
    assert r.usage is not None and r.usage.completion_tokens == 2


def test_drop_unsupported_leaves_refused_parameters_out(client: Client) -> None:
    if "drop_unsupported" not in getattr(build_request("", HI, False, {})[0], "__slots__", ()):
        pytest.skip("ChatRequest has no drop_unsupported field yet")
    r = complete(client, max_tokens=2, n=3, logprobs=True, drop_unsupported=True)
    assert len(r.choices) == 1 and r.usage is not None and r.usage.completion_tokens == 2


def test_max_tokens_is_honoured(client: Client) -> None:
    r = complete(client, messages=LONG, max_tokens=5, **GREEDY)
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 5
    r = complete(client, messages=LONG, max_completion_tokens=3, **GREEDY)
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 3


def test_seed_makes_answers_repeatable(client: Client) -> None:
    greedy = [complete(client, messages=LONG, max_tokens=12, **GREEDY).content for _ in range(2)]
    assert greedy[0] == greedy[1] and greedy[0]
    sampled = [complete(client, messages=LONG, max_tokens=12, temperature=0.9, seed=7).content for _ in range(2)]
    assert sampled[0] == sampled[1] and sampled[0]


def test_stop_sequence_is_honoured(client: Client) -> None:
    full = complete(client, messages=LONG, max_tokens=16, **GREEDY).content
    stop = next(" " + w for w in full.split()[2:] if " " + w in full)  # a word from the middle, with its space
    cut = full[: full.index(stop)]
    assert cut
    r = complete(client, messages=LONG, max_tokens=16, stop=[stop, "never-seen"], **GREEDY)
    assert r.content == cut and r.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(model="", messages=LONG, max_tokens=16, stop=stop, stream=True, **GREEDY)
    chunks = list(stream)
    assert content_of(chunks) == cut
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_context_overflow_is_a_bad_request(client: Client, engine: Any) -> None:
    before = engine.tokens_generated
    with pytest.raises(BadRequestError) as info:
        complete(client, messages=[{"role": "user", "content": "word " * 3000}], max_tokens=4)
    assert info.value.code == "context_length_exceeded" and info.value.provider == "Local"
    assert "context window is 2048 tokens" in str(info.value)
    assert engine.tokens_generated == before


def test_json_schema_response_format(client: Client) -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    r = complete(
        client,
        messages=[{"role": "user", "content": "Give a person."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
        max_tokens=24,
        **GREEDY,
    )
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.content)["age"], int)


def test_last_assistant_message_is_continued(client: Client) -> None:
    prefix = "1. Red\n2."
    messages = [{"role": "user", "content": "List three colors."}, {"role": "assistant", "content": prefix}]
    r = complete(client, messages=messages, max_tokens=6, **GREEDY)
    assert r.content and not r.content.startswith("1.")


# -- streams -----------------------------------------------------------------------------------------------------


def test_stream(client: Client) -> None:
    stream = client.chat.completions.create(
        model="", messages=LONG, max_tokens=8, stream=True, stream_options={"include_usage": True}, **GREEDY
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.provider for c in chunks} == {"Local"} and stream.provider == "Local"
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert all(c.model == "smollm2-135m" and c.object == "chat.completion.chunk" for c in chunks)
    finish, usage = chunks[-2], chunks[-1]
    assert finish.choices[0].finish_reason == "length" and finish.usage is None
    assert usage.choices == [] and usage.usage is not None
    assert usage.usage.completion_tokens == 8
    assert usage.usage.total_tokens == usage.usage.prompt_tokens + 8
    assert content_of(chunks) == complete(client, messages=LONG, max_tokens=8, **GREEDY).content


def test_stream_without_include_usage_has_no_usage_chunk(client: Client) -> None:
    chunks = list(client.chat.completions.create(model="", messages=HI, max_tokens=3, stream=True))
    assert chunks[-1].choices[0].finish_reason is not None
    assert all(c.usage is None for c in chunks)


def test_closing_a_sync_stream_stops_generation_and_frees_the_model(client: Client, engine: Any) -> None:
    with Hold(engine, "text", nth=3) as hold:  # the model waits after its third piece of text
        stream = client.chat.completions.create(model="", messages=LONG, max_tokens=300, stream=True, **GREEDY)
        seen = 0
        for chunk in stream:
            seen += bool(chunk.choices and chunk.choices[0].delta.content)
            if seen == 3:
                break
        stream.close()
    assert not engine.busy  # close() returned once the model's thread let go
    stopped_at = engine.tokens_generated
    assert stopped_at == hold.tokens_at  # not one token after the close (of the 300 asked for)
    assert hold.of(hold.held) == ["queued", "running", "text", "text", "text", "cancelled", "done"]
    r = complete(client, messages=LONG, max_tokens=4, **GREEDY)  # the next request runs at once
    assert r.usage is not None and r.usage.completion_tokens == 4
    assert engine.tokens_generated == stopped_at + 4  # and the closed stream generated nothing more


def test_closing_while_the_prompt_is_read_stops_between_pieces(local: Local, engine: Any) -> None:
    messages = [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 150}]
    request, _ = build_request("", messages, True, {"max_tokens": 4, "seed": 1})
    before = engine.tokens_generated
    with Hold(engine, "piece") as hold:  # the model waits after the first piece of the prompt
        chunks = local.stream(request, None)  # Local needs no call context
        first = next(chunks)  # the role chunk comes as the job starts, before the prompt is read
        assert first.choices[0].delta.role == "assistant"
        assert hold.reached.wait(HANG_GUARD)
        chunks.close()
    assert not engine.busy and engine.tokens_generated == before
    read = engine.call(lambda llama: llama.n_tokens)
    assert read == engine.n_batch  # stopped after the first of the ~1500-token prompt's three pieces


def test_failover_timeouts_stop_a_sync_call(local: Local, engine: Any) -> None:
    """The failover engine's watchdog cuts a sync call short: here while a ~1500-token prompt is being read (the
    model is held after its first piece until the watchdog's stop reaches it; with a seed, the prompt is read from
    the start whatever an earlier test left in llama.cpp's cache)."""
    messages = [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 150}]
    before = engine.tokens_generated
    with Client(provider=local, max_retries=0) as c:
        with Hold(engine, "piece"), pytest.raises(APITimeoutError, match="first_token_timeout"):
            c.chat.completions.create(
                model="", messages=messages, max_tokens=4, stream=True, first_token_timeout=0.2, seed=1
            )
        with Hold(engine, "piece"), pytest.raises(APITimeoutError, match="deadline"):
            c.chat.completions.create(model="", messages=messages, max_tokens=4, deadline=0.2, seed=1)
    read = engine.call(lambda llama: llama.n_tokens)  # runs once the cancelled jobs have let go
    assert engine.tokens_generated == before and read == engine.n_batch


# -- async -------------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_complete_and_stream(aclient: AsyncClient, client: Client) -> None:
    r = await aclient.chat.completions.create(model="", messages=LONG, max_tokens=6, **GREEDY)
    assert isinstance(r, ChatCompletion) and r.provider == "Local"
    assert r.choices[0].finish_reason == "length" and r.usage is not None and r.usage.completion_tokens == 6
    stream = await aclient.chat.completions.create(
        model="", messages=LONG, max_tokens=6, stream=True, stream_options={"include_usage": True}, **GREEDY
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.provider for c in chunks} == {"Local"} and len({c.id for c in chunks}) == 1
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert content_of(chunks) == r.content


@pytest.mark.anyio
async def test_async_errors(aclient: AsyncClient) -> None:
    with pytest.raises(NotFoundError, match="smollm2-135m"):
        await aclient.chat.completions.create(model="nope", messages=HI, max_tokens=1)
    with pytest.raises(BadRequestError, match="tools"):
        await aclient.chat.completions.create(
            model="", messages=HI, stream=True, tools=[{"type": "function", "function": {"name": "f"}}]
        )
    with pytest.raises(BadRequestError, match="context window"):
        await aclient.chat.completions.create(model="", messages=[{"role": "user", "content": "word " * 3000}])


@pytest.mark.anyio
async def test_async_generation_does_not_block_the_loop(aclient: AsyncClient, engine: Any) -> None:
    with Hold(engine, "text") as hold:  # the model waits in the middle of the answer
        call = asyncio.create_task(aclient.chat.completions.create(model="", messages=LONG, max_tokens=32, **GREEDY))
        await hold.seen("text")  # this task runs meanwhile: the call does not block the loop
        assert not call.done() and engine.busy
        hold.release()
        r = await call
    assert r.usage is not None and r.usage.completion_tokens == 32

    # chunks are handed over as they are made: the first arrives while the model waits after producing it
    with Hold(engine, "text") as hold:
        stream = await aclient.chat.completions.create(model="", messages=LONG, max_tokens=300, stream=True, **GREEDY)
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    await hold.seen("text")  # the model is held right after handing it over (or about to be)
                    assert engine.busy and engine.tokens_generated == hold.tokens_at
                    break


@pytest.mark.anyio
async def test_async_stream_aclose_stops_generation(aclient: AsyncClient, client: Client, engine: Any) -> None:
    with Hold(engine, "text", nth=3) as hold:
        stream = await aclient.chat.completions.create(model="", messages=LONG, max_tokens=300, stream=True, **GREEDY)
        seen = 0
        async for chunk in stream:
            seen += bool(chunk.choices and chunk.choices[0].delta.content)
            if seen == 3:
                break
        await stream.aclose()
    assert not engine.busy
    stopped_at = engine.tokens_generated
    assert stopped_at == hold.tokens_at  # not one token after the close
    r = await aclient.chat.completions.create(model="", messages=LONG, max_tokens=4, **GREEDY)
    assert r.usage is not None and engine.tokens_generated == stopped_at + r.usage.completion_tokens


@pytest.mark.anyio
async def test_cancelling_the_task_stops_generation(aclient: AsyncClient, engine: Any) -> None:
    got_first = asyncio.Event()

    async def consume() -> None:
        stream = await aclient.chat.completions.create(model="", messages=LONG, max_tokens=300, stream=True, **GREEDY)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got_first.set()

    with Hold(engine, "text") as hold:  # the model waits after the first piece of text, until the stop reaches it
        task = asyncio.create_task(consume())
        await got_first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not engine.busy
    stopped_at = engine.tokens_generated
    assert stopped_at == hold.tokens_at  # not one token after the cancel (of the 300 asked for)
    assert engine.call(lambda llama: engine.tokens_generated) == stopped_at  # nothing ran after


@pytest.mark.anyio
async def test_failover_timeout_stops_an_async_call(local: Local, engine: Any) -> None:
    messages = [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 150}]
    before = engine.tokens_generated
    aclient = AsyncClient(provider=local, max_retries=0)
    with Hold(engine, "piece"), pytest.raises(APITimeoutError, match="first_token_timeout"):
        await aclient.chat.completions.create(
            model="", messages=messages, max_tokens=4, stream=True, first_token_timeout=0.2, seed=1
        )
    assert not engine.busy and engine.tokens_generated == before  # stopped while reading the prompt
    assert engine.call(lambda llama: llama.n_tokens) == engine.n_batch  # after its first piece


@pytest.mark.anyio
async def test_cancelling_a_queued_request_drops_it(aclient: AsyncClient, engine: Any) -> None:
    """A request waiting for the model leaves the queue at once when cancelled; the running one is unaffected."""
    start = engine.tokens_generated
    with Hold(engine, "text") as hold:  # the first request waits in the middle of its answer
        first = await aclient.chat.completions.create(model="", messages=LONG, max_tokens=64, stream=True, **GREEDY)
        second = asyncio.create_task(aclient.chat.completions.create(model="", messages=HI, max_tokens=64))
        queued = await hold.seen("queued", 2)  # the second is queued behind the first
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert queued.state == "dropped" and hold.of(queued) == ["queued", "cancelled"]
        assert engine.busy  # the first is still generating: the cancelled one did not wait for it
        hold.release()
        chunks = [c async for c in first]
    assert chunks[-1].choices[0].finish_reason == "length"
    assert engine.tokens_generated == start + 64  # and the dropped one never ran


# -- concurrency -------------------------------------------------------------------------------------------------


def test_concurrent_requests_from_threads_all_succeed(client: Client) -> None:
    barrier = threading.Barrier(4)

    def one(i: int) -> str:
        barrier.wait()
        if i % 2:
            r = complete(client, messages=[{"role": "user", "content": f"Count to {i}."}], max_tokens=6)
            assert r.usage is not None and r.usage.completion_tokens >= 1
            return r.content
        stream = client.chat.completions.create(
            model="", messages=[{"role": "user", "content": f"Say {i}."}], max_tokens=6, stream=True
        )
        chunks = list(stream)
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        return content_of(chunks)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(one, range(4)))
    assert all(answers)


@pytest.mark.anyio
async def test_concurrent_requests_from_asyncio_gather_all_succeed(aclient: AsyncClient) -> None:
    async def streamed() -> str:
        stream = await aclient.chat.completions.create(model="", messages=HI, max_tokens=6, stream=True)
        return content_of([c async for c in stream])

    async def whole(i: int) -> str:
        r = await aclient.chat.completions.create(
            model="", messages=[{"role": "user", "content": f"Count to {i}."}], max_tokens=6
        )
        assert isinstance(r, ChatCompletion) and r.provider == "Local"
        return r.content

    answers = await asyncio.gather(whole(1), streamed(), whole(2), streamed())
    assert all(answers)


# -- the default client ------------------------------------------------------------------------------------------


def test_default_client_answers_offline_from_local(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "POLYCHAT_LOCAL_MODEL"):
        monkeypatch.delenv(var, raising=False)
    with Client() as c:
        r = c.chat.completions.create(model="", messages=HI, max_tokens=4)
    assert isinstance(r, ChatCompletion) and r.provider == "Local" and r.content


def test_llama_failures_become_polychat_errors() -> None:
    job = local_engine._Job(lambda loaded, job: None)
    job.error = RuntimeError("llama_decode returned -1")
    with pytest.raises(APIError, match="llama_decode returned -1") as info:
        local_feed._outcome(job, "Local")
    assert info.value.provider == "Local" and isinstance(info.value.__cause__, RuntimeError)
