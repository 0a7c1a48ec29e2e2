"""Ollama adapter: the mapping rules one by one (the shared scenarios are in test_providers_conformance.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from polychat import Client, errors
from polychat._request import build_request
from polychat.providers._convert import UnsupportedParameterError
from polychat.providers.ollama import Ollama, OllamaStreamParser, host_url
from tests.support.wire import Reply, WireServer

USER = [{"role": "user", "content": "Hi"}]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def body(stream: bool = False, messages: Any = USER, **params: Any) -> dict[str, Any]:
    req, _ = build_request("llama3.2", messages, stream, params)
    decoded: dict[str, Any] = json.loads(Ollama(base_url="http://h:1").chat_request(req, stream=stream).content)
    return decoded


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:11434"),
        ("0.0.0.0:9999", "http://0.0.0.0:9999"),
        ("https://ollama.example.com", "https://ollama.example.com:11434"),
        ("http://[::1]:8080/", "http://[::1]:8080"),
        ("[::1]", "http://[::1]:11434"),
    ],
)
def test_ollama_host(value: str, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert host_url(value) == url
    monkeypatch.setenv("OLLAMA_HOST", value)
    assert Ollama().base_url == url


def test_stream_flag_is_always_sent_and_options_mapped() -> None:
    assert body()["stream"] is False and body(stream=True)["stream"] is True
    b = body(temperature=0.1, top_p=0.2, seed=3, max_tokens=4, stop="x", presence_penalty=0.5, frequency_penalty=0.6)
    assert b["options"] == {
        "temperature": 0.1,
        "top_p": 0.2,
        "seed": 3,
        "num_predict": 4,
        "stop": ["x"],
        "presence_penalty": 0.5,
        "frequency_penalty": 0.6,
    }
    req, _ = build_request(
        "m", USER, False, {"temperature": 0.1, "extra_body": {"options": {"num_ctx": 8192}, "keep_alive": "1m"}}
    )
    b = json.loads(Ollama().chat_request(req, stream=False).content or b"")
    assert b["options"] == {"temperature": 0.1, "num_ctx": 8192} and b["keep_alive"] == "1m"


def test_tool_choice_auto_none_or_refused() -> None:
    assert "tools" in body(tools=TOOLS, tool_choice="auto")
    assert "tools" not in body(tools=TOOLS, tool_choice="none")
    for choice in ("required", {"type": "function", "function": {"name": "f"}}):
        with pytest.raises(UnsupportedParameterError) as e:
            body(tools=TOOLS, tool_choice=choice)
        assert e.value.param == "tool_choice" and "Ollama" in str(e.value)


def test_json_modes_and_images() -> None:
    assert body(response_format={"type": "json_object"})["format"] == "json"
    assert "format" not in body(response_format={"type": "text"})
    with pytest.raises(UnsupportedParameterError):
        body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}])
    msgs = [{"role": "developer", "content": "Be brief."}, *USER]
    assert body(messages=msgs)["messages"][0] == {"role": "system", "content": "Be brief."}


def test_stream_parser_length_usage_and_error_line() -> None:
    p = OllamaStreamParser("O", "m", include_usage=True)
    last = {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "length"}
    lines = [
        {"model": "m", "message": {"role": "assistant", "content": "Hi"}, "done": False},
        {**last, "prompt_eval_count": 5, "eval_count": 2},
    ]
    data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    out = p.feed(data[:7]) + p.feed(data[7:])
    assert list(p.finish()) == []
    assert [c.choices[0].finish_reason for c in out if c.choices] == [None, None, "length"]
    assert out[-1].choices == [] and out[-1].usage is not None and out[-1].usage.total_tokens == 7
    q = OllamaStreamParser("O", "m", include_usage=False)
    with pytest.raises(errors.InternalServerError):
        q.feed(b'{"error": "boom"}\n')
    r = OllamaStreamParser("O", "m", include_usage=False)
    r.feed(b'{"model": "m", "message": {"content": "Hi"}, "done": false}\n')
    with pytest.raises(errors.APIConnectionError):
        list(r.finish())


def test_no_key_needed_and_bearer_when_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    with WireServer() as server:
        base = server.scenario("t", Reply.fixture("ollama", "text.response.json"))
        with Client(provider=Ollama(base_url=base), max_retries=0) as client:
            r = client.chat.completions.create(model="llama3.2", messages=USER)
        assert r.content and "authorization" not in server.requests("t")[0].headers
        monkeypatch.setenv("OLLAMA_API_KEY", "ollama-key")
        with Client(provider=Ollama(base_url=base), max_retries=0) as client:
            client.chat.completions.create(model="llama3.2", messages=USER)
        assert server.requests("t")[1].headers["authorization"] == "Bearer ollama-key"


def test_models_list() -> None:
    data = {"models": [{"name": "llama3.2:latest", "model": "llama3.2:latest", "size": 2019393189}]}
    with WireServer() as server:
        base = server.scenario("m", Reply(body=json.dumps(data).encode(), headers={"content-type": "application/json"}))
        with Client(provider=Ollama(base_url=base)) as client:
            assert [m.id for m in client.models.list()] == ["llama3.2:latest"]
        assert server.requests("m")[0].path == "/api/tags"
