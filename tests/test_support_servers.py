"""The real-server fixtures work and carry real traffic (plain httpx, not polychat)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.support.servers import LlamaServer, LocalHTTPServer, MicroSocks, TinyProxy, wait_until


def _unique_path(tag: str) -> str:
    return f"/{tag}-{uuid.uuid4().hex[:12]}"


@pytest.mark.llama
def test_llama_server_lists_models(llama_server: LlamaServer) -> None:
    response = httpx.get(f"{llama_server.base_url}/models", trust_env=False, timeout=10)
    assert response.status_code == 200
    assert [m["id"] for m in response.json()["data"]] == [llama_server.model]


@pytest.mark.llama
def test_llama_server_chat_completion(llama_server: LlamaServer) -> None:
    response = httpx.post(
        f"{llama_server.base_url}/chat/completions",
        json={
            "model": "any-name-works",
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8,
            "temperature": 0,
        },
        trust_env=False,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert 0 < body["usage"]["completion_tokens"] <= 8


def test_tinyproxy_forwards_with_auth(tinyproxy: TinyProxy, http_server: LocalHTTPServer) -> None:
    path = _unique_path("via-tinyproxy")
    forwarded_before = tinyproxy.forwarded_count()
    with httpx.Client(proxy=tinyproxy.url, trust_env=False, timeout=10) as client:
        response = client.get(http_server.url + path)
    assert response.status_code == 200
    assert response.json()["path"] == path
    # The upstream saw tinyproxy's Via header, and tinyproxy logged the request and an upstream connection.
    (seen,) = http_server.requests_for(path)
    assert TinyProxy.VIA_NAME in seen.headers.get("via", "")
    assert f"GET {http_server.url}{path} HTTP/1.1" in tinyproxy.requests_logged()
    wait_until(lambda: tinyproxy.forwarded_count() > forwarded_before, 5, what="tinyproxy forward log")


def test_tinyproxy_rejects_missing_or_wrong_auth(tinyproxy: TinyProxy, http_server: LocalHTTPServer) -> None:
    path = _unique_path("tinyproxy-noauth")
    with httpx.Client(proxy=tinyproxy.url_without_auth, trust_env=False, timeout=10) as client:
        assert client.get(http_server.url + path).status_code == 407
    wrong = f"http://{tinyproxy.user}:wrong@127.0.0.1:{tinyproxy.port}"
    with httpx.Client(proxy=wrong, trust_env=False, timeout=10) as client:
        # tinyproxy 1.11 answers a wrong password with 401, a missing one with 407.
        assert client.get(http_server.url + path).status_code in (401, 407)
    assert http_server.requests_for(path) == []


def test_microsocks_forwards_with_auth(microsocks: MicroSocks, http_server: LocalHTTPServer) -> None:
    assert "%40" in microsocks.url  # the password needs percent-encoding in the URL
    path = _unique_path("via-microsocks")
    with httpx.Client(proxy=microsocks.url, trust_env=False, timeout=10) as client:
        response = client.get(http_server.url + path)
    assert response.status_code == 200
    assert response.json()["path"] == path
    assert len(http_server.requests_for(path)) == 1
    target = f"127.0.0.1:{http_server.port}"
    wait_until(lambda: target in microsocks.connections_logged(), 5, what="microsocks connection log")


def test_microsocks_rejects_missing_auth(microsocks: MicroSocks, http_server: LocalHTTPServer) -> None:
    path = _unique_path("microsocks-noauth")
    with (
        httpx.Client(proxy=microsocks.url_without_auth, trust_env=False, timeout=10) as client,
        pytest.raises(httpx.ProxyError),
    ):
        client.get(http_server.url + path)
    assert http_server.requests_for(path) == []


def test_microsocks_without_auth(microsocks_noauth: MicroSocks, http_server: LocalHTTPServer) -> None:
    path = _unique_path("microsocks-open")
    with httpx.Client(proxy=microsocks_noauth.url, trust_env=False, timeout=10) as client:
        assert client.get(http_server.url + path).status_code == 200
    target = f"127.0.0.1:{http_server.port}"
    wait_until(lambda: target in microsocks_noauth.connections_logged(), 5, what="microsocks log")


@pytest.mark.anyio
async def test_async_client_through_both_proxies(
    tinyproxy: TinyProxy, microsocks: MicroSocks, http_server: LocalHTTPServer
) -> None:
    for proxy_url in (tinyproxy.url, microsocks.url):
        path = _unique_path("async")
        async with httpx.AsyncClient(proxy=proxy_url, trust_env=False, timeout=10) as client:
            response = await client.get(http_server.url + path)
        assert response.status_code == 200
        assert len(http_server.requests_for(path)) == 1
