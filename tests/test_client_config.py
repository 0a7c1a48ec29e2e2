"""``Client(config=...)``: the config file's defaults and routes apply to library calls, sync and async."""

from __future__ import annotations

import asyncio
from pathlib import Path

from polychat import AsyncClient, Client
from tests.support.faults import FaultServer, Ok, Status

MSGS = [{"role": "user", "content": "hi"}]


def write_config(tmp_path: Path, faults: FaultServer) -> Path:
    a = faults.scenario("a", Status(503))
    b = faults.scenario("b", Ok(text="from the route"))
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[defaults]
max_retries = 0

[providers.down]
type = "openai"
base_url = "{a}"

[providers.up]
type = "openai"
base_url = "{b}"
models = ["listed-model"]

[routes.fast]
chain = ["down:model-a", "up:model-b"]
max_retries = 0
"""
    )
    return path


def test_route_alias_picks_the_chain_and_pins_models(tmp_path: Path, faults: FaultServer) -> None:
    client = Client(config=write_config(tmp_path, faults))
    r = client.chat.completions.create(model="fast", messages=MSGS)
    assert r.content == "from the route" and r.provider == "up"
    assert faults.requests("a")[0].body["model"] == "model-a"
    assert faults.requests("b")[0].body["model"] == "model-b"
    assert client.max_retries == 0


def test_provider_colon_model_and_listed_models(tmp_path: Path, faults: FaultServer) -> None:
    client = Client(config=str(write_config(tmp_path, faults)))
    assert client.chat.completions.create(model="up:x", messages=MSGS).provider == "up"
    assert faults.requests("b")[-1].body["model"] == "x"
    assert client.chat.completions.create(model="listed-model", messages=MSGS).provider == "up"


def test_async_client_routes_too(tmp_path: Path, faults: FaultServer) -> None:
    path = write_config(tmp_path, faults)

    async def go() -> str:
        async with AsyncClient(config=path) as client:
            stream = await client.chat.completions.create(model="fast", messages=MSGS, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(go()) == "from the route"


def test_explicit_provider_beats_config(tmp_path: Path, faults: FaultServer) -> None:
    from polychat.providers import OpenaiChat

    c = faults.scenario("c", Ok(text="explicit"))
    client = Client(provider=OpenaiChat(base_url=c), config=write_config(tmp_path, faults))
    assert client.chat.completions.create(model="fast", messages=MSGS).content == "explicit"
