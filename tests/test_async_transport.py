"""The async transport seam: aiohttp for direct routes, httpx for every proxied one (and for all sync calls).

Which library sent a request is read where a user could read it, on the server: httpx asks for keep-alive in a
``Connection`` header and aiohttp (speaking HTTP/1.1, where keep-alive is the default) sends none; a proxied request
carries tinyproxy's ``Via``. Whether a client let its connections go is read there too: the server sees them close.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from polychat import AsyncClient, Client, errors
from polychat._http import TransportPool, goes_direct
from polychat._proxy import parse_proxy
from polychat.providers import OpenaiChat
from polychat.routing import CircuitBreaker, RetryProvider
from tests.support.faults import CloseBeforeHeaders, FaultServer, Ok, Record, Stall
from tests.support.servers import MicroSocks, TinyProxy, free_port, wait_until

MSGS = [{"role": "user", "content": "Hi"}]
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
PROXY_VARS += tuple(v.lower() for v in PROXY_VARS)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def ask(client: AsyncClient, *, stream: bool, **kw: Any) -> str:
    r = await client.chat.completions.create(model="m", messages=MSGS, stream=stream, **kw)
    if not stream:
        return r.content
    return "".join([c.choices[0].delta.content or "" async for c in r if c.choices])  # type: ignore[union-attr]


def via_tinyproxy(faults: FaultServer, scenario: str) -> bool:
    recs = faults.requests(scenario)
    return bool(recs) and all(TinyProxy.VIA_NAME in r.headers.get("via", "") for r in recs)


def sent_by(faults: FaultServer, scenario: str) -> set[str]:
    """The HTTP libraries that sent ``scenario``'s requests straight to the server, as the server tells them apart."""
    recs = faults.requests(scenario)
    assert recs and not any("via" in r.headers for r in recs), "a direct request came through a proxy"
    return {"httpx" if r.headers.get("connection") == "keep-alive" else "aiohttp" for r in recs}


def all_hung_up(recs: list[Record]) -> None:
    """Wait until the server has seen every one of these requests' connections closed (it never closes them)."""
    wait_until(lambda: all(r.closed is not None for r in recs), timeout=10, what="the client to hang up")


# -- which route -------------------------------------------------------------------------------------------------


def test_direct_async_calls_go_through_aiohttp(faults: FaultServer, clean_env: pytest.MonkeyPatch) -> None:
    url = faults.scenario("d", Ok(text="straight through"))

    async def go() -> tuple[str, str]:
        async with AsyncClient(provider=OpenaiChat(base_url=url)) as client:
            return await ask(client, stream=False), await ask(client, stream=True)

    whole, streamed = asyncio.run(go())
    assert whole == streamed == "straight through"
    assert sent_by(faults, "d") == {"aiohttp"}


def test_sync_calls_stay_on_httpx(faults: FaultServer, clean_env: pytest.MonkeyPatch) -> None:
    url = faults.scenario("s", Ok(text="sync"))
    with Client(provider=OpenaiChat(base_url=url)) as client:
        assert client.chat.completions.create(model="m", messages=MSGS).content == "sync"
        assert (
            "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(model="m", messages=MSGS, stream=True)
                if c.choices
            )
            == "sync"
        )
    assert sent_by(faults, "s") == {"httpx"}


@pytest.mark.parametrize("stream", [False, True])
def test_async_env_proxy_still_goes_through_the_proxy(
    faults: FaultServer, tinyproxy: TinyProxy, clean_env: pytest.MonkeyPatch, stream: bool
) -> None:
    url = faults.scenario("envp", Ok(text="env proxied"))
    clean_env.setenv("HTTP_PROXY", tinyproxy.url)

    async def go() -> str:
        async with AsyncClient(provider=OpenaiChat(base_url=url)) as client:
            return await ask(client, stream=stream)

    assert asyncio.run(go()) == "env proxied"
    assert via_tinyproxy(faults, "envp")


def test_async_env_no_proxy_and_trust_env_false_go_direct(faults: FaultServer, clean_env: pytest.MonkeyPatch) -> None:
    url = faults.scenario("np", Ok(text="exempt"))
    clean_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # dead: fails if used

    async def go(**kw: Any) -> str:
        async with AsyncClient(provider=OpenaiChat(base_url=url), max_retries=0, **kw) as client:
            return await ask(client, stream=False)

    assert asyncio.run(go(trust_env=False)) == "exempt"
    clean_env.setenv("NO_PROXY", "127.0.0.1")
    assert asyncio.run(go()) == "exempt"
    assert len(faults.requests("np")) == 2 and sent_by(faults, "np") == {"aiohttp"}


def test_async_explicit_proxy_and_its_exemptions(
    faults: FaultServer, tinyproxy: TinyProxy, clean_env: pytest.MonkeyPatch
) -> None:
    url = faults.scenario("ex", Ok(text="ok"))

    async def go(proxies: Any) -> str:
        async with AsyncClient(provider=OpenaiChat(base_url=url), proxies=proxies) as client:
            return await ask(client, stream=True)

    assert asyncio.run(go(tinyproxy.url)) == "ok" and via_tinyproxy(faults, "ex")
    for exempt in ({"all": tinyproxy.url, "no_proxy": "127.0.0.1"}, {"https": tinyproxy.url}, False):
        faults.records.clear()
        assert asyncio.run(go(exempt)) == "ok"
        assert sent_by(faults, "ex") == {"aiohttp"}, exempt


ENV_CASES: list[dict[str, str]] = [
    {},
    {"HTTP_PROXY": "http://p:1"},
    {"HTTPS_PROXY": "http://p:1"},
    {"ALL_PROXY": "socks5://p:1"},
    {"HTTP_PROXY": "http://p:1", "NO_PROXY": "localhost,127.0.0.1"},
    {"ALL_PROXY": "http://p:1", "NO_PROXY": ".example.com"},
    {"ALL_PROXY": "http://p:1", "NO_PROXY": "*"},
    {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "api.example.com"},
]
EXPLICIT_CASES: list[Any] = [
    False,
    {},
    "http://p:1",
    {"http": "http://p:1"},
    {"https": "http://p:1"},
    {"all": "socks5://p:1", "no_proxy": "127.0.0.1,example.com"},
    {"https": "http://p:1", "no_proxy": ["*.example.com"]},
    {"no_proxy": "example.com"},
]
URLS = [
    "http://127.0.0.1:8080/v1/chat",
    "http://localhost/v1",
    "https://api.example.com/v1/models",
    "https://example.com/v1",
    "https://other.org/v1",
]


def _httpx_is_direct(client: httpx.AsyncClient, url: str) -> bool:
    transport = client._transport_for_url(httpx.URL(url))
    import httpcore

    return type(getattr(transport, "_pool", None)) is httpcore.AsyncConnectionPool


@pytest.mark.parametrize("env", ENV_CASES, ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()) or "none")
@pytest.mark.parametrize("trust_env", [True, False])
def test_route_choice_matches_httpx_for_the_environment(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], trust_env: bool
) -> None:
    for k, v in env.items():
        clean_env.setenv(k, v)
    client = TransportPool(trust_env=trust_env).async_client(None)
    for url in URLS:
        assert goes_direct(None, url, trust_env=trust_env) == _httpx_is_direct(client, url), url


@pytest.mark.parametrize("value", EXPLICIT_CASES, ids=repr)
def test_route_choice_matches_httpx_for_explicit_settings(clean_env: pytest.MonkeyPatch, value: Any) -> None:
    clean_env.setenv("ALL_PROXY", "http://env:1")  # ignored by httpx once a setting is explicit
    clean_env.setenv("NO_PROXY", "other.org")
    cfg = parse_proxy(value)
    client = TransportPool().async_client(cfg)
    for url in URLS:
        assert goes_direct(cfg, url, trust_env=True) == _httpx_is_direct(client, url), url


# -- errors, timeouts, cancellation --------------------------------------------------------------------------------


def test_aiohttp_failures_become_polychat_errors(faults: FaultServer, clean_env: pytest.MonkeyPatch) -> None:
    stall = faults.scenario("st", Stall())
    closing = faults.scenario("cb", CloseBeforeHeaders())
    dead = f"http://user:sekrit@127.0.0.1:{free_port()}/v1"

    async def err(url: str, stream: bool, **kw: Any) -> errors.PolychatError:
        async with AsyncClient(provider=OpenaiChat(base_url=url), max_retries=0, **kw) as client:
            with pytest.raises(errors.PolychatError) as info:
                await ask(client, stream=stream)
            # What aiohttp raised is the error's cause (the traceback a user sees shows it).
            assert type(info.value.__cause__).__module__.partition(".")[0] == "aiohttp", repr(info.value.__cause__)
            return info.value

    for stream in (False, True):
        e = asyncio.run(err(dead, stream))
        assert isinstance(e, errors.APIConnectionError) and "Could not connect to" in str(e)
        assert "sekrit" not in str(e)
        e = asyncio.run(err(closing, stream))
        assert isinstance(e, errors.APIConnectionError) and "broke" in str(e)
        e = asyncio.run(err(stall, stream, timeout=0.3))
        assert isinstance(e, errors.APITimeoutError) and "Timed out waiting for data from" in str(e)
    faults.release()


def test_unparsable_response_is_a_broken_connection_without_the_url(clean_env: pytest.MonkeyPatch) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    async def go() -> errors.PolychatError:
        server = await asyncio.start_server(garbage, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        provider = OpenaiChat(base_url=f"http://127.0.0.1:{port}/v1?api_key=sekrit", api_key="k")
        async with server, AsyncClient(provider=provider, max_retries=0) as client:
            with pytest.raises(errors.PolychatError) as info:
                await ask(client, stream=False)
            return info.value

    e = asyncio.run(go())
    assert isinstance(e, errors.APIConnectionError) and "broke" in str(e), e
    assert "sekrit" not in str(e)


def test_cancelled_stream_mid_body_hangs_up(faults: FaultServer, clean_env: pytest.MonkeyPatch) -> None:
    url = faults.scenario("mid", Stall(after_chunks=2))

    async def go() -> None:
        async with AsyncClient(provider=OpenaiChat(base_url=url), max_retries=0) as client:
            stream = await client.chat.completions.create(model="m", messages=MSGS, stream=True)
            both_chunks = asyncio.Event()

            async def drain() -> None:
                seen = 0
                async for c in stream:
                    seen += bool(c.choices and c.choices[0].delta.content)
                    if seen == 2:
                        both_chunks.set()  # what the server sends before it stalls: the body is half read

            task = asyncio.create_task(drain())
            await both_chunks.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await stream.aclose()
            rec = faults.requests("mid")[0]
            await asyncio.to_thread(wait_until, lambda: rec.closed is not None, timeout=10, what="hang-up")

    asyncio.run(go())


def test_cancelled_before_headers_hangs_up(faults: FaultServer, clean_env: pytest.MonkeyPatch) -> None:
    url = faults.scenario("pre", Stall())

    async def go() -> None:
        async with AsyncClient(provider=OpenaiChat(base_url=url), max_retries=0) as client:
            task = asyncio.create_task(ask(client, stream=False))
            # Sent and waiting for headers that never come (the server holds the request).
            await asyncio.to_thread(wait_until, lambda: faults.requests("pre"), timeout=10, what="the request")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            rec = faults.requests("pre")[0]
            await asyncio.to_thread(wait_until, lambda: rec.closed is not None, timeout=10, what="hang-up")

    asyncio.run(go())


# -- sessions and loops ----------------------------------------------------------------------------------------------


@pytest.fixture
def no_unclosed_warnings() -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        gc.collect()
    assert not [w for w in caught if "Unclosed" in str(w.message)], [str(w.message) for w in caught]


def test_one_client_across_event_loops(
    faults: FaultServer, clean_env: pytest.MonkeyPatch, no_unclosed_warnings: None
) -> None:
    url = faults.scenario("loops", Ok(text="again"))
    client = AsyncClient(provider=OpenaiChat(base_url=url))

    async def ask_then_close() -> str:
        text = await ask(client, stream=False)
        (kept,) = faults.requests("loops")[1:]
        assert kept.closed is None, "the connection is kept for the next call"
        await client.close()
        return text

    # (The fault server ends every stream's connection itself; a plain answer's connection stays open.)
    assert asyncio.run(ask(client, stream=True)) == "again"
    assert asyncio.run(ask_then_close()) == "again"  # a new loop: a new session, the old one dropped
    first, second = faults.requests("loops")
    assert sent_by(faults, "loops") == {"aiohttp"} and first.peer != second.peer  # the new loop's own connection
    all_hung_up([second])


def slow_then_fast(faults: FaultServer, prefix: str) -> RetryProvider:
    """A chain whose first provider is slow to answer, so a hedge starts the second (which answers "fast")."""
    a = faults.scenario(prefix + "a", Stall())  # never answers: the hedge wins however slow the machine is
    b = faults.scenario(prefix + "b", Ok(text="fast"))
    return RetryProvider(
        [OpenaiChat(base_url=a, name="A"), OpenaiChat(base_url=b, name="B")],
        breaker=CircuitBreaker(),
        hedge_after=0.1,
    )


def test_sync_hedging_uses_aiohttp_on_the_bridge_loop_and_close_releases_it(
    faults: FaultServer, clean_env: pytest.MonkeyPatch, no_unclosed_warnings: None
) -> None:
    chain = slow_then_fast(faults, "h")
    client = Client(provider=chain)
    # A plain answer: its connection stays open (the fault server ends a stream's connection itself).
    assert client.chat.completions.create(model="m", messages=MSGS).content == "fast"
    assert sent_by(faults, "hb") == {"aiohttp"}
    (kept,) = faults.requests("hb")
    assert kept.closed is None, "the hedge's connection is kept for the next call"
    client.close()
    all_hung_up([kept])
    faults.release()


def test_import_polychat_does_not_import_aiohttp() -> None:
    code = "import sys, polychat; from polychat import Client, AsyncClient; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_close_releases_the_async_client_sync_hedging_opened_for_a_proxied_route(
    faults: FaultServer, clean_env: pytest.MonkeyPatch, microsocks: MicroSocks
) -> None:
    # SOCKS relays a connection end to end (tinyproxy would end connections on its own), so the server sees ours.
    chain = slow_then_fast(faults, "p")
    client = Client(provider=chain, proxies=microsocks.url)
    tunnels = len(microsocks.connections_logged())
    r = client.chat.completions.create(model="m", messages=MSGS)
    assert r.content == "fast" and f"127.0.0.1:{faults.port}" in microsocks.connections_logged()[tunnels:]
    (kept,) = faults.requests("pb")
    assert kept.closed is None, "the hedge's connection is kept for the next call"
    client.close()
    all_hung_up([kept])
    faults.release()


def test_a_sync_close_inside_the_loop_keeps_its_close_task_referenced(
    faults: FaultServer, clean_env: pytest.MonkeyPatch
) -> None:
    from polychat import _loops

    url = faults.scenario("tl", Ok(text="x"))

    async def go() -> None:
        client = AsyncClient(provider=OpenaiChat(base_url=url))
        assert await ask(client, stream=False) == "x"
        aio = client._pool._aio
        assert aio is not None
        session = next(iter(aio._sessions.values()))
        client._pool.close()  # what Client.close() does, here called from inside the running loop
        pending = set(_loops._pending)
        assert pending, "the close task is kept until it is done (the loop holds tasks only weakly)"
        await asyncio.gather(*pending)
        assert session.closed and not _loops._pending

    asyncio.run(go())
