"""The seed's example, run as a user would: a separate Python process, the code as the seed documents it.

Only the package name is changed. The seed's proxy URLs are placeholders (``username:password@host:port``):
verbatim, the example must fail at once with a clear error that hides the password; with the placeholders filled
in by real proxies, it must stream an answer from the real llama.cpp server *through* those proxies.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.servers import LlamaServer, MicroSocks, TinyProxy

SEED = """\
from polychat.client import Client
from polychat.Provider import OpenaiChat, RetryProvider

client = Client(
    proxies={
        'http': 'http://username:password@host:port',
        'https': 'http://username:password@host:port',
    },
    provider=RetryProvider([OpenaiChat], single_provider_retry=True, max_retries=5),
)
messages = [{'role': 'user', 'content': 'Hello'}]
response = client.chat.completions.create(model='gpt-3.5-turbo', messages=messages, stream=True)
for message in response:
    print(message.choices[0].delta.content or "")
"""


def run_seed(code: str, base_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY") and not k.startswith("OPENAI_")}
    env["OPENAI_BASE_URL"] = base_url
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_seed_verbatim_fails_fast_on_placeholder_proxy(llama_server: LlamaServer) -> None:
    result = run_seed(SEED, llama_server.base_url)
    assert result.returncode != 0
    assert "polychat.errors.ConfigError: proxies['http']: proxy URL 'http://username:***@host:port' is not valid" in (
        result.stderr
    )
    assert "password" not in result.stderr


def test_seed_streams_through_authenticating_http_proxy(llama_server: LlamaServer, tinyproxy: TinyProxy) -> None:
    before = tinyproxy.forwarded_count()
    code = SEED.replace("http://username:password@host:port", tinyproxy.url)
    result = run_seed(code, llama_server.base_url)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) > 2  # one line per chunk
    assert result.stdout.strip()
    # The request really went through the proxy (an http:// upstream uses the 'http' key).
    assert f"POST http://127.0.0.1:{llama_server.port}/v1/chat/completions HTTP/1.1" in tinyproxy.requests_logged()
    assert tinyproxy.forwarded_count() > before
    assert tinyproxy.password is not None and tinyproxy.password not in result.stdout + result.stderr


def test_seed_streams_through_socks5_proxy(llama_server: LlamaServer, microsocks: MicroSocks) -> None:
    code = SEED.replace("http://username:password@host:port", microsocks.url)
    result = run_seed(code, llama_server.base_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert f"127.0.0.1:{llama_server.port}" in microsocks.connections_logged()
