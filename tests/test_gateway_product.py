"""The gateway as its clients see it (issue 13): which models it lists and where they go, no silent model
substitution, OpenAI's own chunk shape, refusals worded for HTTP clients, and ``--port 0``.

Real parts: ``polychat serve`` as a subprocess, the official ``openai`` client, the fault-injecting server as the
upstream "OpenAI", and the embedded model.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from polychat import AsyncClient, Client
from polychat.config import load_config
from tests.support.faults import FaultServer, Ok, Status
from tests.support.gateway import Gateway, gateway_env
from tests.support.servers import wait_until

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]
SECRET = "sk-wrong-0123456789abcdef"


def config_text(fault: FaultServer) -> str:
    return (
        f'[providers.work]\ntype = "openai"\nbase_url = "{fault.url}/s/work/v1"\nmodels = ["work-a", "work-b"]\n'
        '[routes.fast]\nchain = ["work:work-a", "local"]\n'
    )


def test_models_are_what_the_gateway_serves_and_agree_with_the_library(fault: FaultServer, tmp_path: Path) -> None:
    base = fault.scenario("openai", Status(401, message="Incorrect API key provided"))
    env = {"OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": base}
    with (
        Gateway(config_text=config_text(fault), env=env) as gw,
        openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0) as client,
    ):
        listed = list(client.models.list())
        by_id = {m.id: m for m in listed}
        # routes, the declared provider's models, the built-in openai's default model, the embedded model
        assert [m.id for m in listed][:1] == ["fast"]
        assert {"work-a", "work-b", "gpt-4o-mini", "smollm2-135m"} <= set(by_id)
        assert by_id["gpt-4o-mini"].owned_by == "openai" and by_id["work-a"].owned_by == "work"
        assert all(m.created > 1_600_000_000 for m in listed)  # a real time, not 0

        # the library, given the same config, lists the same
        assert gw.config_path is not None
        path = gw.config_path
        lib = Client(config=load_config(str(path)))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("OPENAI_API_KEY", SECRET)
            mp.setenv("OPENAI_BASE_URL", base)
            lib = Client(config=load_config(str(path)))
            assert [(m.id, m.owned_by) for m in lib.models.list()] == [(m.id, m.owned_by) for m in listed]
            alib = AsyncClient(config=load_config(str(path)))
            alisted = asyncio.run(alib.models.list())
            assert [(m.id, m.owned_by) for m in alisted] == [(m.id, m.owned_by) for m in listed]

        # a model the page lists goes to its owner: smollm2-135m to the embedded model, never to OpenAI
        raw = client.chat.completions.with_raw_response.create(model="smollm2-135m", messages=HELLO, max_tokens=4)
        assert raw.headers["x-polychat-provider"] == "Local"
        # gpt-4o-mini with a wrong key: the matching HTTP error, not a 200 from another model
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        assert info.value.status_code == 502
        assert info.value.code == "upstream_authentication_error"
        assert SECRET not in info.value.response.text


def test_stream_chunks_carry_what_openai_sends(fault: FaultServer) -> None:
    fault.scenario("work", Ok(text="one two three"))
    with Gateway(config_text=config_text(fault)) as gw:
        body = {"model": "work-a", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
        r = httpx.post(f"{gw.base_url}/chat/completions", json=body, timeout=60)
        assert r.status_code == 200
        frames = [line[6:] for line in r.text.split("\n\n") if line.startswith("data: ")]
        assert frames[-1] == "[DONE]"
        import json

        chunks = [json.loads(f) for f in frames[:-1]]
        for raw, chunk in zip(frames, chunks, strict=False):
            assert '"role":null' not in raw and '"tool_calls":null' not in raw and '"refusal":null' not in raw
            for choice in chunk["choices"]:
                assert None not in choice["delta"].values()
                assert "finish_reason" in choice  # null until the end, as OpenAI sends it
        assert all("usage" not in c for c in chunks[:-1])  # only the last chunk has usage
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] >= 0
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text.strip() == "one two three"
        assert any(c["choices"] and c["choices"][0]["delta"] == {} and c["choices"][0]["finish_reason"] for c in chunks)


def test_refusals_speak_http(fault: FaultServer) -> None:
    with (
        Gateway(config_text=config_text(fault)) as gw,
        openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0) as client,
    ):
        # an unknown model: a 404 listing the gateway's models, not only the embedded one's
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="no-such-model", messages=HELLO)
        assert missing.value.code == "model_not_found"
        assert "work-a" in missing.value.message and "fast" in missing.value.message
        assert "model=" not in missing.value.message  # no Python advice for an HTTP client
        tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="smollm2-135m", messages=HELLO, tools=[tool])  # type: ignore[list-item]
        assert info.value.code == "unsupported_parameter"
        assert info.value.param == "tools"
        assert "drop_unsupported" not in info.value.message
        assert "Remove 'tools' from the request" in info.value.message


def _serve_banner(args: list[str], config: str | None = None, env: dict[str, str] | None = None) -> tuple[str, int]:
    """Start ``polychat serve --port 0 ARGS``, wait for the gateway to answer on the port its banner prints, stop
    it; return the banner and that port."""
    home = Path(tempfile.mkdtemp(prefix="polychat-banner-"))
    if config is not None:
        (home / "polychat").mkdir()
        (home / "polychat" / "config.toml").write_text(config)
    log = home / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "polychat", "serve", "--port", "0", *args],
            env=gateway_env(env, home),
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "polychat gateway:" in log.read_text(), 60, what="the banner")
        banner = next(line for line in log.read_text().splitlines() if line.startswith("polychat gateway:"))
        match = re.search(r"http://[^/]+:(\d+)/ ", banner)
        assert match, banner
        port = int(match.group(1))
        wait_until(lambda: _health(port), 60, what="the gateway on the printed port")
        return banner, port
    finally:
        proc.terminate()
        proc.wait(30)


def test_port_0_prints_the_real_port() -> None:
    banner, port = _serve_banner([])
    assert port != 0
    assert f"chat page http://127.0.0.1:{port}/ " in banner and f"API http://127.0.0.1:{port}/v1" in banner
    assert "auth: off" in banner


def test_named_keys_alone_make_a_public_bind_safe_and_the_banner_says_so() -> None:
    # --insecure is redundant here: the named key guards the gateway, so the banner must not cry INSECURE.
    config = '[server.keys.team-a]\nkey_env = "TEAM_A_KEY"\n'
    banner, _ = _serve_banner(["--host", "0.0.0.0", "--insecure"], config, {"TEAM_A_KEY": "sk-team-a-0123456789"})
    assert "auth: on, 1 key(s)" in banner
    assert "INSECURE" not in banner
    assert "sk-team-a" not in banner


def _health(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
