"""One error table for every transport: a real failure reads the same whichever transport met it.

polychat sends through httpx (every sync request), httpx again (async requests through a proxy) and aiohttp (async
requests that go direct). Each test here produces one real failure — a closed port, a server that stalls past the
timeout, a connection closed before the headers, a proxy that refuses — and checks that the three (or, for
proxies, the two httpx) transports raise the same error class with the same words.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from polychat import AsyncClient, Client, errors
from polychat.providers import OpenaiChat
from tests.support.faults import CloseBeforeHeaders, FaultServer, Ok, Stall
from tests.support.servers import MicroSocks, TinyProxy, free_port

MSGS = [{"role": "user", "content": "Hi"}]
TRANSPORTS = ("httpx-sync", "httpx-async", "aiohttp")
REFUSED = f"[Errno {errno.ECONNREFUSED}] {os.strerror(errno.ECONNREFUSED)}"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def stalled(faults: FaultServer) -> Iterator[str]:
    yield faults.scenario("stall", Stall())
    faults.release()


def _sync(url: str, stream: bool, **kw: Any) -> errors.PolychatError:
    with Client(provider=OpenaiChat(base_url=url), max_retries=0, **kw) as client:
        with pytest.raises(errors.PolychatError) as info:
            answer = client.chat.completions.create(model="m", messages=MSGS, stream=stream)
            if stream:
                list(answer)  # type: ignore[call-overload]
        return info.value


async def _async(url: str, stream: bool, **kw: Any) -> errors.PolychatError:
    async with AsyncClient(provider=OpenaiChat(base_url=url), max_retries=0, **kw) as client:
        with pytest.raises(errors.PolychatError) as info:
            answer = await client.chat.completions.create(model="m", messages=MSGS, stream=stream)
            if stream:
                async for _ in answer:  # type: ignore[union-attr]
                    pass
        return info.value


def library(error: BaseException) -> str:
    """The HTTP library that met the failure: the package of the error's cause (as a traceback shows it)."""
    return type(error.__cause__).__module__.partition(".")[0]


def failure(transport: str, url: str, stream: bool, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> errors.PolychatError:
    """The error a call meets over ``transport``, checking the call really went that way."""
    if transport == "httpx-sync":
        error = _sync(url, stream, **kw)
    else:
        if transport == "httpx-async" and "proxies" not in kw:
            # A direct route takes aiohttp; without it (as when it is not installed) httpx carries it.
            monkeypatch.setitem(sys.modules, "polychat._aio", None)
        error = asyncio.run(_async(url, stream, **kw))
        monkeypatch.undo()
    if error.__cause__ is not None:  # (a status a proxy answered with has no library exception behind it)
        assert library(error) == transport.partition("-")[0], (transport, repr(error.__cause__))
    return error


def same_everywhere(
    transports: tuple[str, ...], url: str, monkeypatch: pytest.MonkeyPatch, **kw: Any
) -> dict[tuple[str, bool], errors.PolychatError]:
    seen = {(t, stream): failure(t, url, stream, monkeypatch, **kw) for t in transports for stream in (False, True)}
    kinds = {(type(e), str(e)) for e in seen.values()}
    assert len(kinds) == 1, "\n".join(f"{k}: {type(e).__name__}: {e}" for k, e in seen.items())
    return seen


def the_error(seen: dict[tuple[str, bool], errors.PolychatError]) -> errors.PolychatError:
    return next(iter(seen.values()))


def test_a_closed_port_is_the_same_connection_error_on_every_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    e = the_error(same_everywhere(TRANSPORTS, f"http://user:sekrit@127.0.0.1:{port}/v1", monkeypatch))
    assert type(e) is errors.APIConnectionError
    assert str(e).startswith(f"Could not connect to http://127.0.0.1:{port}/v1/chat/completions: {REFUSED}"), e
    assert "sekrit" not in str(e)


def test_a_server_stalling_past_the_timeout_is_the_same_timeout_on_every_transport(
    stalled: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    e = the_error(same_everywhere(TRANSPORTS, stalled, monkeypatch, timeout=0.3))
    assert isinstance(e, errors.APITimeoutError)
    assert str(e).startswith(f"Timed out waiting for data from {stalled}/chat/completions"), e


@pytest.mark.parametrize("stream", [False, True])
def test_a_connection_closed_before_the_headers_is_a_broken_connection_on_every_transport(
    faults: FaultServer, stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = faults.scenario("closed", CloseBeforeHeaders())
    # The reason after the colon is the library's own ("Server disconnected..."); class and words are ours.
    for transport in TRANSPORTS:
        e = failure(transport, url, stream, monkeypatch)
        assert type(e) is errors.APIConnectionError, (transport, e)
        assert str(e).startswith(f"Connection to {url}/chat/completions broke: "), (transport, e)


# -- proxies: only httpx carries proxied requests, sync and async --------------------------------------------------

HTTPX = ("httpx-sync", "httpx-async")


def test_a_proxy_on_a_closed_port_is_the_same_connection_error_naming_it(
    faults: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = faults.scenario("ok", Ok())
    port = free_port()
    e = the_error(same_everywhere(HTTPX, url, monkeypatch, proxies=f"http://bob:pw9@127.0.0.1:{port}"))
    assert type(e) is errors.APIConnectionError
    assert str(e).startswith(f"Could not connect to {url}/chat/completions via proxy http://bob:***@127.0.0.1:{port}")
    assert REFUSED in str(e) and "pw9" not in str(e)
    assert not faults.requests("ok")


def test_a_socks_proxy_refusing_the_password_is_the_same_proxy_error(
    faults: FaultServer, microsocks: MicroSocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = faults.scenario("ok", Ok())
    assert microsocks.password is not None
    bad = f"socks5://{microsocks.user}:WrongPass9@127.0.0.1:{microsocks.port}"
    e = the_error(same_everywhere(HTTPX, url, monkeypatch, proxies=bad))
    assert type(e) is errors.APIConnectionError
    assert str(e).startswith(f"Proxy failed for {url}/chat/completions via proxy socks5://{microsocks.user}:***@")
    assert "WrongPass9" not in str(e) and not faults.requests("ok")


def test_an_http_proxy_refusing_the_password_is_the_same_error_naming_it(
    faults: FaultServer, tinyproxy: TinyProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = faults.scenario("ok", Ok())
    assert tinyproxy.password is not None
    bad = tinyproxy.url.replace(tinyproxy.password, "WrongPass9")
    e = the_error(same_everywhere(HTTPX, url, monkeypatch, proxies=bad))
    assert type(e) is errors.APIConnectionError and "Proxy refused the request for" in str(e)
    assert "WrongPass9" not in str(e) and not faults.requests("ok")
