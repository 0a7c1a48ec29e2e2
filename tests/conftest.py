"""Shared fixtures: real local servers (see ``tests/support/servers.py``).

Session-scoped servers are started lazily by the first test that asks for them and stopped at the end of
the session; module-scoped ones (``fault``, ``fake``, ``protocol_gw``) once per test module that asks, so no
module sees another's scenarios or circuit breakers. Async tests use ``@pytest.mark.anyio`` (the anyio pytest
plugin) on asyncio.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.calls import FLAVOURS
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.faults import FaultServer
from tests.support.gateway import Gateway
from tests.support.protocol_gateway import UPSTREAM_KEY, protocol_gateway_config
from tests.support.servers import LlamaServer, LocalHTTPServer, MicroSocks, TinyProxy


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> str:
    """``sync`` (``Client``) or ``async`` (``AsyncClient``): a test taking it runs once each way."""
    return str(request.param)


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LlamaServer]:
    """``python -m llama_cpp.server`` with SmolLM2-135M; ``.base_url`` is ``http://127.0.0.1:PORT/v1``."""
    with LlamaServer() as server:
        yield server


@pytest.fixture(scope="session")
def tinyproxy() -> Iterator[TinyProxy]:
    """tinyproxy with BasicAuth; ``.url`` carries the credentials, ``.url_without_auth`` does not."""
    with TinyProxy() as proxy:
        yield proxy


@pytest.fixture(scope="session")
def microsocks() -> Iterator[MicroSocks]:
    """microsocks SOCKS5 with username/password; ``.url`` is ``socks5://user:pass@127.0.0.1:PORT``."""
    with MicroSocks() as proxy:
        yield proxy


@pytest.fixture(scope="session")
def microsocks_noauth() -> Iterator[MicroSocks]:
    """microsocks SOCKS5 without authentication."""
    with MicroSocks(auth=False) as proxy:
        yield proxy


@pytest.fixture
def http_server() -> Iterator[LocalHTTPServer]:
    """A local HTTP server that echoes each request as JSON and records it (``.requests``)."""
    with LocalHTTPServer() as server:
        yield server


@pytest.fixture
def faults() -> Iterator[FaultServer]:
    """The fault-injecting OpenAI-compatible server (``tests/support/faults.py``); fails the test on its own bugs."""
    with FaultServer() as server:
        yield server
    assert not server.handler_errors, f"fault server bugs: {server.handler_errors!r}"


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultServer]:
    """The fault server shared by one module's tests (each names its own scenarios); fails on its own bugs."""
    with FaultServer() as server:
        yield server
    assert not server.handler_errors, f"fault server bugs: {server.handler_errors!r}"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    """The fake Anthropic upstream (``tests/support/fake_anthropic.py``) shared by one module's tests."""
    with FakeAnthropic() as server:
        yield server


@pytest.fixture(scope="module")
def protocol_gw(fake: FakeAnthropic, fault: FaultServer, llama_server: LlamaServer) -> Iterator[Gateway]:
    """The protocol tests' gateway (``tests/support/protocol_gateway.py``); its log must never show the upstream key."""
    config = protocol_gateway_config(fake, fault, llama_server)
    with Gateway(config_text=config, env={"FAKE_ANTHROPIC_KEY": UPSTREAM_KEY}) as gateway:
        yield gateway
        assert UPSTREAM_KEY not in gateway.log_text()
