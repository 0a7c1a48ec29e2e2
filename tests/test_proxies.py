"""Proxies do exactly what they are told — proven through real tinyproxy and microsocks, never just by success.

Each test checks the proxy's own log (or connection count) and, where it can, what the upstream saw (tinyproxy
adds a ``Via`` header naming itself), so a request that bypassed the proxy fails the test.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import quote

import pytest

from polychat import AsyncClient, Client, errors
from polychat.providers import OpenaiChat
from polychat.routing import CircuitBreaker, RetryProvider
from tests.support.faults import FaultServer, Ok, Status
from tests.support.servers import LlamaServer, MicroSocks, TinyProxy, free_port

MSGS = [{"role": "user", "content": "Hi"}]


def via_tinyproxy(faults: FaultServer, scenario: str) -> bool:
    return all(TinyProxy.VIA_NAME in r.headers.get("via", "") for r in faults.requests(scenario))


def stream_text(client: Client, **kw: Any) -> str:
    stream = client.chat.completions.create(model="m", messages=MSGS, stream=True, max_tokens=8, **kw)
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


# -- every way to say it -----------------------------------------------------------------------------------------


def test_url_string_proxies_everything(faults: FaultServer, tinyproxy: TinyProxy) -> None:
    url = faults.scenario("u", Ok(text="via url"))
    client = Client(provider=OpenaiChat(base_url=url), proxies=tinyproxy.url)
    assert stream_text(client) == "via url"
    assert via_tinyproxy(faults, "u") and faults.requests("u")


def test_seed_dict_uses_the_http_key_for_plain_http(faults: FaultServer, tinyproxy: TinyProxy) -> None:
    url = faults.scenario("d", Ok(text="dict"))
    dead = f"http://127.0.0.1:{free_port()}"
    # 'http' goes through tinyproxy; 'https' points at a dead port and must not be used for an http:// upstream.
    client = Client(provider=OpenaiChat(base_url=url), proxies={"http": tinyproxy.url, "https": dead})
    assert client.chat.completions.create(model="m", messages=MSGS).content == "dict"
    assert via_tinyproxy(faults, "d")


def test_all_key_is_the_fallback(faults: FaultServer, tinyproxy: TinyProxy) -> None:
    url = faults.scenario("all", Ok(text="all"))
    client = Client(provider=OpenaiChat(base_url=url), proxies={"all": tinyproxy.url})
    assert client.chat.completions.create(model="m", messages=MSGS).content == "all"
    assert via_tinyproxy(faults, "all")


def test_only_https_key_leaves_http_direct(faults: FaultServer, tinyproxy: TinyProxy) -> None:
    url = faults.scenario("h", Ok(text="direct"))
    client = Client(provider=OpenaiChat(base_url=url), proxies={"https": tinyproxy.url})
    assert client.chat.completions.create(model="m", messages=MSGS).content == "direct"
    assert "via" not in faults.requests("h")[0].headers


def test_no_proxy_key_exempts_hosts(faults: FaultServer, tinyproxy: TinyProxy) -> None:
    url = faults.scenario("np", Ok(text="exempt"))
    client = Client(provider=OpenaiChat(base_url=url), proxies={"all": tinyproxy.url, "no_proxy": "127.0.0.1"})
    assert client.chat.completions.create(model="m", messages=MSGS).content == "exempt"
    assert "via" not in faults.requests("np")[0].headers


def test_socks5_with_auth_streams(llama_server: LlamaServer, microsocks: MicroSocks) -> None:
    assert microsocks.password is not None and "@" in microsocks.password  # percent-encoding exercised
    client = Client(provider=OpenaiChat(base_url=llama_server.base_url), proxies=microsocks.url)
    before = len(microsocks.connections_logged())
    assert stream_text(client).strip()
    assert microsocks.connections_logged()[before:] == [f"127.0.0.1:{llama_server.port}"]


def test_socks5h_scheme(faults: FaultServer, microsocks: MicroSocks) -> None:
    url = faults.scenario("s5h", Ok(text="remote dns"))
    client = Client(provider=OpenaiChat(base_url=url), proxies=microsocks.url.replace("socks5://", "socks5h://"))
    assert client.chat.completions.create(model="m", messages=MSGS).content == "remote dns"
    assert f"127.0.0.1:{faults.port}" in microsocks.connections_logged()


def test_http_proxy_streams_from_real_server(llama_server: LlamaServer, tinyproxy: TinyProxy) -> None:
    before = tinyproxy.forwarded_count()
    client = Client(provider=OpenaiChat(base_url=llama_server.base_url), proxies=tinyproxy.url)
    assert stream_text(client).strip()
    assert tinyproxy.forwarded_count() == before + 1


def test_async_client_through_both_proxies(faults: FaultServer, tinyproxy: TinyProxy, microsocks: MicroSocks) -> None:
    url = faults.scenario("as", Ok(text="async proxied"))

    async def go(proxy: str) -> str:
        async with AsyncClient(provider=OpenaiChat(base_url=url), proxies=proxy) as client:
            stream = await client.chat.completions.create(model="m", messages=MSGS, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(go(tinyproxy.url)) == "async proxied"
    assert via_tinyproxy(faults, "as")
    before = len(microsocks.connections_logged())
    assert asyncio.run(go(microsocks.url)) == "async proxied"
    assert len(microsocks.connections_logged()) == before + 1


# -- precedence: call > provider > client > environment ------------------------------------------------------------


def test_provider_proxy_overrides_client_and_call_overrides_both(
    faults: FaultServer, tinyproxy: TinyProxy, microsocks: MicroSocks
) -> None:
    url = faults.scenario("prec", Ok(text="x"))
    dead = f"http://127.0.0.1:{free_port()}"
    client = Client(provider=OpenaiChat(base_url=url, proxy=tinyproxy.url), proxies=dead)
    client.chat.completions.create(model="m", messages=MSGS)
    assert via_tinyproxy(faults, "prec")
    before = len(microsocks.connections_logged())
    client.chat.completions.create(model="m", messages=MSGS, proxy=microsocks.url)
    assert len(microsocks.connections_logged()) == before + 1
    assert "via" not in faults.requests("prec")[-1].headers
    client.chat.completions.create(model="m", messages=MSGS, proxy=False)  # a direct call, whatever is configured
    assert "via" not in faults.requests("prec")[-1].headers
    assert len(microsocks.connections_logged()) == before + 1


def test_providers_in_one_chain_leave_through_their_own_proxies(
    faults: FaultServer, llama_server: LlamaServer, tinyproxy: TinyProxy, microsocks: MicroSocks
) -> None:
    a = faults.scenario("a", Status(500))
    provider = RetryProvider(
        [
            OpenaiChat(base_url=a, proxy=tinyproxy.url, name="A"),
            OpenaiChat(base_url=llama_server.base_url, proxy=microsocks.url, name="B"),
        ],
        max_retries=0,
        breaker=CircuitBreaker(),
    )
    before = len(microsocks.connections_logged())
    client = Client(provider=provider)
    stream = client.chat.completions.create(model="m", messages=MSGS, stream=True, max_tokens=8)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.strip() and stream.provider == "B"
    assert via_tinyproxy(faults, "a") and len(faults.requests("a")) == 1
    assert microsocks.connections_logged()[before:] == [f"127.0.0.1:{llama_server.port}"]


# -- environment variables ---------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_env_http_proxy_is_honoured(faults: FaultServer, tinyproxy: TinyProxy, clean_env: pytest.MonkeyPatch) -> None:
    url = faults.scenario("env", Ok(text="env"))
    clean_env.setenv("HTTP_PROXY", tinyproxy.url)
    assert Client(provider=OpenaiChat(base_url=url)).chat.completions.create(model="m", messages=MSGS).content == "env"
    assert via_tinyproxy(faults, "env")


def test_env_all_proxy_socks(faults: FaultServer, microsocks: MicroSocks, clean_env: pytest.MonkeyPatch) -> None:
    url = faults.scenario("envs", Ok(text="env socks"))
    clean_env.setenv("ALL_PROXY", microsocks.url)
    before = len(microsocks.connections_logged())
    assert Client(provider=OpenaiChat(base_url=url)).chat.completions.create(model="m", messages=MSGS).content
    assert len(microsocks.connections_logged()) == before + 1


def test_trust_env_false_ignores_env(faults: FaultServer, clean_env: pytest.MonkeyPatch) -> None:
    url = faults.scenario("te", Ok(text="direct"))
    clean_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # dead: would fail if used
    client = Client(provider=OpenaiChat(base_url=url), trust_env=False)
    assert client.chat.completions.create(model="m", messages=MSGS).content == "direct"


def test_false_and_empty_dict_force_direct(faults: FaultServer, clean_env: pytest.MonkeyPatch) -> None:
    url = faults.scenario("fd", Ok(text="direct"))
    clean_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    for setting in (False, {}):
        client = Client(provider=OpenaiChat(base_url=url), proxies=setting)
        assert client.chat.completions.create(model="m", messages=MSGS).content == "direct"


def test_env_no_proxy(faults: FaultServer, tinyproxy: TinyProxy, clean_env: pytest.MonkeyPatch) -> None:
    url = faults.scenario("envnp", Ok(text="exempt"))
    clean_env.setenv("HTTP_PROXY", tinyproxy.url)
    clean_env.setenv("NO_PROXY", "127.0.0.1")
    assert Client(provider=OpenaiChat(base_url=url)).chat.completions.create(model="m", messages=MSGS).content
    assert "via" not in faults.requests("envnp")[0].headers


def test_explicit_proxy_beats_env(faults: FaultServer, tinyproxy: TinyProxy, clean_env: pytest.MonkeyPatch) -> None:
    url = faults.scenario("ex", Ok(text="explicit"))
    clean_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    client = Client(provider=OpenaiChat(base_url=url), proxies={"http": tinyproxy.url})
    assert client.chat.completions.create(model="m", messages=MSGS).content == "explicit"
    assert via_tinyproxy(faults, "ex")


# -- failures ----------------------------------------------------------------------------------------------------


def test_wrong_password_is_a_connection_error_naming_the_proxy(faults: FaultServer, tinyproxy: TinyProxy) -> None:
    url = faults.scenario("wp", Ok())
    assert tinyproxy.password is not None
    bad = tinyproxy.url.replace(tinyproxy.password, "WrongPass9")
    client = Client(provider=OpenaiChat(base_url=url), proxies=bad, max_retries=0)
    with pytest.raises(errors.APIConnectionError) as exc:
        client.chat.completions.create(model="m", messages=MSGS)
    msg = str(exc.value)
    assert "Proxy refused" in msg and f"127.0.0.1:{tinyproxy.port}" in msg and "alice:***@" in msg
    assert "WrongPass9" not in msg and not faults.requests("wp")


def test_missing_credentials_407(faults: FaultServer, tinyproxy: TinyProxy) -> None:
    url = faults.scenario("407", Ok())
    client = Client(provider=OpenaiChat(base_url=url), proxies=tinyproxy.url_without_auth, max_retries=0)
    with pytest.raises(errors.APIConnectionError, match="HTTP 407"):
        client.chat.completions.create(model="m", messages=MSGS, stream=True)


def test_socks_wrong_password(faults: FaultServer, microsocks: MicroSocks) -> None:
    url = faults.scenario("sw", Ok())
    assert microsocks.password is not None
    bad = microsocks.url.replace("p%40ss", "nope")
    client = Client(provider=OpenaiChat(base_url=url), proxies=bad, max_retries=0)
    with pytest.raises(errors.APIConnectionError, match="via proxy socks5://bob:\\*\\*\\*@") as exc:
        client.chat.completions.create(model="m", messages=MSGS)
    assert "nope" not in str(exc.value) and not faults.requests("sw")


def test_proxy_down_fails_over_to_another_route(faults: FaultServer, llama_server: LlamaServer) -> None:
    dead = f"http://user:hunter22@127.0.0.1:{free_port()}"
    provider = RetryProvider(
        [
            OpenaiChat(base_url=llama_server.base_url, proxy=dead, name="via-dead-proxy"),
            OpenaiChat(base_url=llama_server.base_url, proxy=False, name="direct"),
        ],
        breaker=CircuitBreaker(),
    )
    client = Client(provider=provider)
    r = client.chat.completions.create(model="m", messages=MSGS, max_tokens=4)
    assert r.provider == "direct"


# -- secrets -----------------------------------------------------------------------------------------------------


def test_secrets_never_in_logs_reprs_or_errors(
    faults: FaultServer, tinyproxy: TinyProxy, caplog: pytest.LogCaptureFixture
) -> None:
    key = "sk-proxy-test-SECRET-123"
    assert tinyproxy.password is not None
    secrets = [key, tinyproxy.password, "hunter22"]
    a = faults.scenario("sa", Status(500))
    b = faults.scenario("sb", Status(401))
    dead = f"http://user:hunter22@127.0.0.1:{free_port()}"
    provider = RetryProvider(
        [
            OpenaiChat(base_url=a, api_key=key, proxy=tinyproxy.url, name="A"),
            OpenaiChat(base_url=b, api_key=key, proxy=dead, name="B"),
            OpenaiChat(base_url=b, api_key=key, name="C"),
        ],
        max_retries=1,
        breaker=CircuitBreaker(),
    )
    client = Client(provider=provider, proxies=dead, api_key=key)
    texts = [repr(client), repr(provider), str(client.proxy), repr(provider.providers[0].proxy)]
    with caplog.at_level(logging.DEBUG):  # every logger, httpx and httpcore included
        with pytest.raises(errors.AllProvidersFailedError) as exc:
            client.chat.completions.create(model="m", messages=MSGS)
        try:
            Client(proxies={"http": "http://u:hunter22@host:port"})
        except errors.ConfigError as e:
            texts.append(str(e))
    err: BaseException | None = exc.value
    while err is not None:  # the whole chain of causes
        texts.append(str(err))
        texts.append(repr(err))
        err = err.__cause__ or err.__context__
    texts += [str(a.error) for a in exc.value.attempts]
    texts += [r.getMessage() for r in caplog.records]
    assert len(caplog.records) > 5
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"secret leaked in: {text[:200]}"


# Passwords with a backslash, a percent sign and non-ASCII characters, each with an ASCII core that shows up in any
# rendering of it (raw, percent-encoded, bytes repr, base64 excepted: checked separately).
SOCKS_PASSWORD = "Zq9Xw\\%é€"
WRONG_PASSWORD = "Wr0ngPw\\%ü"
URL_PASSWORD = "Bp4ssUrl\\%ß"
API_KEY = "sk-Kx7SECRETKEY-0123"
CORES = ("Zq9Xw", "Wr0ngPw", "Bp4ssUrl", "Kx7SECRETKEY")


def stream_joined(chunks: Any) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _socks_url(proxy: MicroSocks, password: str) -> str:
    return f"socks5://bob:{quote(password, safe='')}@127.0.0.1:{proxy.port}"


def test_no_secret_in_any_log_repr_or_error_sync_async_stream_or_not(
    faults: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    with MicroSocks(user="bob", password=SOCKS_PASSWORD) as socks:
        good, wrong = _socks_url(socks, SOCKS_PASSWORD), _socks_url(socks, WRONG_PASSWORD)
        up = faults.scenario("sec-ok", Ok(text="fine"))
        down = faults.scenario("sec-500", Status(500))
        creds = f"http://alice:{quote(URL_PASSWORD, safe='')}@" + up.removeprefix("http://")
        creds_down = f"http://alice:{quote(URL_PASSWORD, safe='')}@" + down.removeprefix("http://")

        def chain() -> RetryProvider:
            return RetryProvider(
                [
                    OpenaiChat(base_url=up, api_key=API_KEY, proxy=wrong, name="wrong-socks"),
                    OpenaiChat(base_url=creds_down, api_key="", name="creds-500"),
                    OpenaiChat(base_url=creds, api_key="", proxy=good, name="creds-socks"),
                ],
                max_retries=0,
                breaker=CircuitBreaker(threshold=1),
            )

        texts: list[str] = []
        root = logging.getLogger()
        with caplog.at_level(logging.DEBUG):  # the root logger at DEBUG: httpx, httpcore and polychat all log
            assert root.isEnabledFor(logging.DEBUG)
            for stream in (False, True):
                provider = chain()
                client = Client(provider=provider, proxies=wrong)
                texts += [repr(client), repr(provider), *(repr(p) for p in provider.providers)]
                texts += [str(p.describe()) for p in provider.providers] + [p.breaker_key for p in provider.providers]
                r = client.chat.completions.create(model="m", messages=MSGS, stream=stream)
                text = stream_joined(r) if stream else r.content  # type: ignore[union-attr]
                assert text == "fine"

                async def run(stream: bool = stream, texts: list[str] = texts) -> str:
                    provider = chain()
                    async with AsyncClient(provider=provider, proxies=wrong) as aclient:
                        texts.append(repr(aclient))
                        r = await aclient.chat.completions.create(model="m", messages=MSGS, stream=stream)
                        if stream:
                            return "".join([c.choices[0].delta.content or "" async for c in r if c.choices])  # type: ignore[union-attr]
                        return r.content  # type: ignore[union-attr]

                assert asyncio.run(run()) == "fine"
            # and a call where everything fails
            with pytest.raises(errors.APIConnectionError) as exc:
                Client(
                    provider=RetryProvider([OpenaiChat(base_url=creds_down, api_key="")], max_retries=0),
                    proxies=wrong,
                ).chat.completions.create(model="m", messages=MSGS)
        err: BaseException | None = exc.value
        while err is not None:
            texts += [str(err), repr(err)]
            err = err.__cause__ or err.__context__
        records = [r.getMessage() for r in caplog.records]
        assert any("setup_socks5_connection.started" in m for m in records), "httpcore's SOCKS lines are in the test"
        assert any("circuit for" in m and "open" in m for m in records), "the breaker warning is in the test"
        assert any(m.startswith("HTTP Request:") for m in records), "httpx's request line is in the test"
        texts += records
        encoded = [quote(p, safe="") for p in (SOCKS_PASSWORD, WRONG_PASSWORD, URL_PASSWORD)]
        for text in texts:
            for secret in (*CORES, *encoded):
                assert secret not in text, f"secret leaked in: {text[:300]}"
