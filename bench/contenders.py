"""The contenders, and the worker process that drives one of them on the orchestrator's command.

Each contender lives in its own process (``python bench/contenders.py NAME``) so that imports and pools never mix;
polychat and raw httpx run in the project's venv, the peers in ``bench/.venv-peers``. The worker reads one JSON
command per line on stdin and answers one JSON line on stdout:

* ``{"op": "setup", "base_url": ...}`` — build the clients (sync and async), warm them up;
* ``{"op": "lat", "mode": "sync"|"async", "stream": bool, "n": N}`` — N requests one after another; each
  sample is the seconds from the call to the whole answer read (every chunk decoded);
* ``{"op": "tput", "concurrency": C, "n": N}`` — N async non-stream requests, C at a time; the seconds taken;
* ``{"op": "quit"}``.

Every answer is checked (the text length, the chunk count), so no contender can win by skipping work. The raw
baselines do what a hand-written client does: ``json.loads`` the body, or each ``data:`` line of the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

MODEL = "bench-model"
MESSAGES = [{"role": "user", "content": "Say something."}]
CHUNKS = int(os.environ.get("BENCH_CHUNKS", "50"))
WORD = "tok "


class Contender:
    """One client library. ``call`` / ``acall`` make one request and return (text length, content chunks)."""

    name = ""
    sync = True
    async_ = True

    def setup(self, base_url: str) -> None:
        self.base_url = base_url

    async def asetup(self) -> None:
        pass

    def call(self, stream: bool) -> tuple[int, int]:
        raise NotImplementedError

    async def acall(self, stream: bool) -> tuple[int, int]:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


# -- raw transports --------------------------------------------------------------------------------------------


def _raw_lines(lines: Any) -> tuple[int, int]:
    n = length = 0
    for line in lines:
        if line.startswith("data: "):
            data = line[6:]
            if data == "[DONE]":
                break
            obj = json.loads(data)
            content = obj["choices"][0]["delta"].get("content")
            if content:
                n += 1
                length += len(content)
    return length, n


class RawHttpx(Contender):
    name = "raw-httpx"

    def setup(self, base_url: str) -> None:
        import httpx

        super().setup(base_url)
        self.url = base_url + "/chat/completions"
        self.client = httpx.Client()
        self.aclient = httpx.AsyncClient()

    def call(self, stream: bool) -> tuple[int, int]:
        if not stream:
            r = self.client.post(self.url, json={"model": MODEL, "messages": MESSAGES})
            r.raise_for_status()
            return len(r.json()["choices"][0]["message"]["content"]), 1
        with self.client.stream("POST", self.url, json={"model": MODEL, "messages": MESSAGES, "stream": True}) as r:
            r.raise_for_status()
            return _raw_lines(r.iter_lines())

    async def acall(self, stream: bool) -> tuple[int, int]:
        if not stream:
            r = await self.aclient.post(self.url, json={"model": MODEL, "messages": MESSAGES})
            r.raise_for_status()
            return len(r.json()["choices"][0]["message"]["content"]), 1
        body = {"model": MODEL, "messages": MESSAGES, "stream": True}
        async with self.aclient.stream("POST", self.url, json=body) as r:
            r.raise_for_status()
            n = length = 0
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    data = line[6:]
                    if data == "[DONE]":
                        break
                    content = json.loads(data)["choices"][0]["delta"].get("content")
                    if content:
                        n += 1
                        length += len(content)
            return length, n

    async def aclose(self) -> None:
        await self.aclient.aclose()
        self.client.close()


class RawAiohttp(Contender):
    name = "raw-aiohttp"
    sync = False

    def setup(self, base_url: str) -> None:
        super().setup(base_url)
        self.url = base_url + "/chat/completions"

    async def asetup(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession()

    async def acall(self, stream: bool) -> tuple[int, int]:
        if not stream:
            async with self.session.post(self.url, json={"model": MODEL, "messages": MESSAGES}) as r:
                r.raise_for_status()
                data = await r.json()
                return len(data["choices"][0]["message"]["content"]), 1
        body = {"model": MODEL, "messages": MESSAGES, "stream": True}
        async with self.session.post(self.url, json=body) as r:
            r.raise_for_status()
            n = length = 0
            async for raw in r.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data: "):
                    data = line[6:]
                    if data == "[DONE]":
                        break
                    content = json.loads(data)["choices"][0]["delta"].get("content")
                    if content:
                        n += 1
                        length += len(content)
            return length, n

    async def aclose(self) -> None:
        await self.session.close()


# -- OpenAI-shaped answers (polychat and every peer) ------------------------------------------------------------


def _whole(r: Any) -> tuple[int, int]:
    return len(r.choices[0].message.content or ""), 1


def _stream(chunks: Any) -> tuple[int, int]:
    n = length = 0
    for chunk in chunks:
        if chunk.choices:
            content = chunk.choices[0].delta.content
            if content:
                n += 1
                length += len(content)
    return length, n


async def _astream(chunks: Any) -> tuple[int, int]:
    n = length = 0
    async for chunk in chunks:
        if chunk.choices:
            content = chunk.choices[0].delta.content
            if content:
                n += 1
                length += len(content)
    return length, n


def _counts(r: Any, stream: bool) -> tuple[int, int]:
    return _stream(r) if stream else _whole(r)


async def _acounts(r: Any, stream: bool) -> tuple[int, int]:
    return await _astream(r) if stream else _whole(r)


# -- polychat --------------------------------------------------------------------------------------------------


class Polychat(Contender):
    name = "polychat"

    def setup(self, base_url: str) -> None:
        from polychat.client import AsyncClient, Client
        from polychat.providers import OpenaiChat

        super().setup(base_url)
        # Any: create() returns a completion or a stream depending on ``stream``; the calls below know which.
        self.client: Any = Client(provider=OpenaiChat(base_url=base_url, api_key="bench"))
        self.aclient: Any = AsyncClient(provider=OpenaiChat(base_url=base_url, api_key="bench"))

    def call(self, stream: bool) -> tuple[int, int]:
        return _counts(self.client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=stream), stream)

    async def acall(self, stream: bool) -> tuple[int, int]:
        r = await self.aclient.chat.completions.create(model=MODEL, messages=MESSAGES, stream=stream)
        return await _acounts(r, stream)

    async def aclose(self) -> None:
        await self.aclient.close()
        self.client.close()


# -- peers -----------------------------------------------------------------------------------------------------


class OpenAISDK(Contender):
    name = "openai"

    def setup(self, base_url: str) -> None:
        import openai

        super().setup(base_url)
        self.client = openai.OpenAI(base_url=base_url, api_key="bench")
        self.aclient = openai.AsyncOpenAI(base_url=base_url, api_key="bench")

    def call(self, stream: bool) -> tuple[int, int]:
        r = self.client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=stream)  # type: ignore[arg-type]
        return _counts(r, stream)

    async def acall(self, stream: bool) -> tuple[int, int]:
        r = await self.aclient.chat.completions.create(model=MODEL, messages=MESSAGES, stream=stream)  # type: ignore[arg-type]
        return await _acounts(r, stream)

    async def aclose(self) -> None:
        await self.aclient.close()
        self.client.close()


class LiteLLM(Contender):
    name = "litellm"

    def setup(self, base_url: str) -> None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        super().setup(base_url)
        litellm.telemetry = False
        self.litellm = litellm
        self.kw = {"model": f"openai/{MODEL}", "api_base": base_url, "api_key": "bench"}

    def call(self, stream: bool) -> tuple[int, int]:
        return _counts(self.litellm.completion(messages=MESSAGES, stream=stream, **self.kw), stream)

    async def acall(self, stream: bool) -> tuple[int, int]:
        return await _acounts(await self.litellm.acompletion(messages=MESSAGES, stream=stream, **self.kw), stream)


class LiteLLMRouter(LiteLLM):
    name = "litellm-router"

    def setup(self, base_url: str) -> None:
        super().setup(base_url)
        self.router = self.litellm.Router(model_list=[{"model_name": "bench", "litellm_params": dict(self.kw)}])

    def call(self, stream: bool) -> tuple[int, int]:
        return _counts(self.router.completion(model="bench", messages=MESSAGES, stream=stream), stream)

    async def acall(self, stream: bool) -> tuple[int, int]:
        return await _acounts(await self.router.acompletion(model="bench", messages=MESSAGES, stream=stream), stream)


class G4F(Contender):
    name = "g4f"

    def setup(self, base_url: str) -> None:
        from g4f.client import AsyncClient, Client
        from g4f.client.factory import create_custom_provider

        super().setup(base_url)
        # An explicit provider class: with only base_url, g4f's AsyncClient looks providers up online.
        provider = create_custom_provider(base_url, "bench", name="Bench")
        self.client = Client(provider=provider, api_key="bench")
        self.aclient = AsyncClient(provider=provider, api_key="bench")

    def call(self, stream: bool) -> tuple[int, int]:
        return _counts(self.client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=stream), stream)

    async def acall(self, stream: bool) -> tuple[int, int]:
        if not stream:
            return _whole(await self.aclient.chat.completions.create(model=MODEL, messages=MESSAGES))
        # g4f's async create returns its stream without being awaited
        return await _astream(self.aclient.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))


CONTENDERS: dict[str, type[Contender]] = {
    c.name: c for c in (RawHttpx, RawAiohttp, Polychat, OpenAISDK, LiteLLM, LiteLLMRouter, G4F)
}


# -- the worker ------------------------------------------------------------------------------------------------


def check(result: tuple[int, int], stream: bool) -> None:
    length, n = result
    # g4f strips the answer's trailing space; everything else must arrive whole.
    if not len(WORD) * CHUNKS - 1 <= length <= len(WORD) * CHUNKS or (stream and n < 1):
        raise RuntimeError(f"incomplete answer: {length} characters in {n} chunks")


def lat_sync(c: Contender, stream: bool, n: int) -> list[float]:
    out = []
    perf = time.perf_counter
    for _ in range(n):
        t0 = perf()
        res = c.call(stream)
        out.append(perf() - t0)
        check(res, stream)
    return out


async def lat_async(c: Contender, stream: bool, n: int) -> list[float]:
    out = []
    perf = time.perf_counter
    for _ in range(n):
        t0 = perf()
        res = await c.acall(stream)
        out.append(perf() - t0)
        check(res, stream)
    return out


async def throughput(call: Callable[[], Awaitable[tuple[int, int]]], concurrency: int, n: int) -> dict[str, Any]:
    """``n`` requests, ``concurrency`` in flight at a time; returns the seconds taken and the errors seen."""
    remaining = n
    errors: list[str] = []

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                check(await call(), False)
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")

    t0 = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return {"elapsed": time.perf_counter() - t0, "n": n, "errors": len(errors), "first_error": errors[:1]}


def serve(make: Callable[[], Any]) -> None:
    """Answer JSON commands on stdin; ``make()`` builds the object that handles them."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing a library prints may corrupt the protocol
    handler = make()
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("op") == "quit":
            break
        try:
            result = handler(cmd, loop)
            reply = {"ok": True, **result}
        except Exception as e:
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    try:
        closer = getattr(handler, "close", None)
        if closer is not None:
            closer(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


class Driver:
    """Handles the commands for one contender."""

    def __init__(self, name: str) -> None:
        self.c = CONTENDERS[name]()

    def __call__(self, cmd: dict[str, Any], loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        op = cmd["op"]
        c = self.c
        if op == "setup":
            c.setup(cmd["base_url"])
            loop.run_until_complete(c.asetup())
            import importlib.metadata as md

            versions = {}
            for dist in cmd.get("versions", []):
                with contextlib.suppress(md.PackageNotFoundError):
                    versions[dist] = md.version(dist)
            return {"sync": c.sync, "async": c.async_, "versions": versions}
        if op == "lat":
            stream = bool(cmd["stream"])
            if cmd["mode"] == "sync":
                return {"samples": lat_sync(c, stream, cmd["n"])}
            return {"samples": loop.run_until_complete(lat_async(c, stream, cmd["n"]))}
        if op == "tput":
            return loop.run_until_complete(throughput(lambda: c.acall(False), cmd["concurrency"], cmd["n"]))
        raise ValueError(f"unknown op {op!r}")

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.c.aclose())


class FailoverDriver:
    """polychat's failover costs, measured against asking the live provider directly, in one process.

    ``setup`` takes the live upstream, a dead port (connection refused) and two latency-shaped upstreams:

    * ``direct``: the live provider alone;
    * ``dead-first``: ``RetryProvider([dead, live], breaker=False)`` — every call is refused first, then switches;
    * ``open-breaker``: ``RetryProvider([tripped, live])`` whose breaker holds ``tripped`` open all run long;
    * ``hedge``: ``RetryProvider([first token after 2 s, first token after 50 ms], hedge_after=0.2)``.
    """

    VARIANTS = ("direct", "dead-first", "open-breaker")

    def __call__(self, cmd: dict[str, Any], loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        op = cmd["op"]
        if op == "setup":
            self.setup(cmd)
            return {"sync": True, "async": True, "versions": {}}
        if op == "pairs":
            return {"samples": self.pairs(cmd["mode"], cmd["n"], loop)}
        if op == "hedge":
            return {"samples": self.hedge(cmd["mode"], cmd["n"], loop)}
        raise ValueError(f"unknown op {op!r}")

    def setup(self, cmd: dict[str, Any]) -> None:
        import logging

        from polychat.client import AsyncClient, Client
        from polychat.errors import APIConnectionError
        from polychat.providers import OpenaiChat
        from polychat.routing import CircuitBreaker, RetryProvider

        # The dead provider's failure is logged at WARNING on every call; a user would see the same.
        logging.getLogger("polychat").addHandler(logging.NullHandler())
        logging.getLogger("polychat").propagate = False

        live, dead = cmd["base_url"], cmd["dead_url"]
        breaker = CircuitBreaker(cooldown=3600, max_cooldown=3600)

        def chains() -> dict[str, Any]:
            tripped = OpenaiChat(base_url=dead, api_key="bench", name="tripped")
            for _ in range(breaker.threshold):
                breaker.failure(tripped.breaker_key, APIConnectionError("bench: tripped", provider="tripped"))
            return {
                "direct": OpenaiChat(base_url=live, api_key="bench", name="live"),
                "dead-first": RetryProvider(
                    [
                        OpenaiChat(base_url=dead, api_key="bench", name="dead"),
                        OpenaiChat(base_url=live, api_key="bench"),
                    ],
                    breaker=False,
                ),
                "open-breaker": RetryProvider(
                    [tripped, OpenaiChat(base_url=live, api_key="bench", name="live")], breaker=breaker
                ),
                "hedge": RetryProvider(
                    [
                        OpenaiChat(base_url=cmd["slow_url"], api_key="bench", name="slow"),
                        OpenaiChat(base_url=cmd["fast_url"], api_key="bench", name="fast"),
                    ],
                    hedge_after=0.2,
                ),
            }

        self.sync: dict[str, Any] = {k: Client(provider=p) for k, p in chains().items()}
        self.async_: dict[str, Any] = {k: AsyncClient(provider=p) for k, p in chains().items()}

    def pairs(self, mode: str, n: int, loop: asyncio.AbstractEventLoop) -> dict[str, list[float]]:
        """``n`` rounds of one non-stream call per variant, the order rotating each round."""
        out: dict[str, list[float]] = {v: [] for v in self.VARIANTS}
        perf = time.perf_counter
        for i in range(n):
            k = i % len(self.VARIANTS)
            for v in self.VARIANTS[k:] + self.VARIANTS[:k]:
                if mode == "sync":
                    t0 = perf()
                    r = self.sync[v].chat.completions.create(model=MODEL, messages=MESSAGES)
                    out[v].append(perf() - t0)
                else:

                    async def one(v: str = v) -> Any:
                        t0 = perf()
                        r = await self.async_[v].chat.completions.create(model=MODEL, messages=MESSAGES)
                        out[v].append(perf() - t0)
                        return r

                    r = loop.run_until_complete(one())
                if r.provider not in ("live", "OpenaiChat"):
                    raise RuntimeError(f"{v}: answered by {r.provider}")
        return out

    def hedge(self, mode: str, n: int, loop: asyncio.AbstractEventLoop) -> list[float]:
        """Seconds from the call to the first content chunk, the slow provider first in the chain."""
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            if mode == "sync":
                stream = self.sync["hedge"].chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
                first = next(c for c in stream if c.choices and c.choices[0].delta.content)
                out.append(time.perf_counter() - t0)
                stream.close()
            else:

                async def one(t0: float = t0) -> Any:
                    stream = await self.async_["hedge"].chat.completions.create(
                        model=MODEL, messages=MESSAGES, stream=True
                    )
                    async for c in stream:
                        if c.choices and c.choices[0].delta.content:
                            out.append(time.perf_counter() - t0)
                            break
                    await stream.aclose()
                    return c

                first = loop.run_until_complete(one())
            if first.provider != "fast":
                raise RuntimeError(f"hedge: first token from {first.provider}")
        return out


class GatewayDriver:
    """Load for the gateways (and for the upstream directly, the reference), sent with aiohttp: the fastest client
    here, so the gateway is what is measured. ``url`` is a ``/v1`` base; ``headers`` e.g. the gateway's key."""

    def __init__(self) -> None:
        self.session: Any = None

    def __call__(self, cmd: dict[str, Any], loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        op = cmd["op"]
        if op == "setup":
            return {"sync": False, "async": True, "versions": {}}
        return loop.run_until_complete(self.run(cmd))

    async def one(self, url: str, headers: dict[str, str], stream: bool) -> tuple[int, int]:
        body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES}
        if stream:
            body["stream"] = True
        async with self.session.post(url + "/chat/completions", json=body, headers=headers) as r:
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}: {(await r.text())[:200]}")
            if not stream:
                data = await r.json(content_type=None)
                return len(data["choices"][0]["message"]["content"]), 1
            n = length = 0
            async for raw in r.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data: ") and line[6:] != "[DONE]":
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    content = (choices[0].get("delta") or {}).get("content")
                    if content:
                        n += 1
                        length += len(content)
            return length, n

    async def run(self, cmd: dict[str, Any]) -> dict[str, Any]:
        import aiohttp

        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        url, headers, stream = cmd["url"], cmd.get("headers") or {}, bool(cmd.get("stream"))
        conc, n = cmd["concurrency"], cmd["n"]
        samples: list[float] = []
        errors: list[str] = []
        remaining = n
        perf = time.perf_counter

        async def lane() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t0 = perf()
                try:
                    check(await self.one(url, headers, stream), stream)
                    samples.append(perf() - t0)
                except Exception as e:
                    errors.append(f"{type(e).__name__}: {e}")

        t0 = perf()
        await asyncio.gather(*(lane() for _ in range(conc)))
        elapsed = perf() - t0
        return {"samples": samples, "elapsed": elapsed, "n": n, "errors": len(errors), "first_error": errors[:1]}

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.session is not None:
            loop.run_until_complete(self.session.close())


def main() -> None:
    names = [*CONTENDERS, "polychat-failover", "gateway-driver"]
    if len(sys.argv) != 2 or sys.argv[1] not in names:
        sys.exit(f"usage: contenders.py {{{'|'.join(names)}}}")
    name = sys.argv[1]
    if name == "polychat-failover":
        serve(FailoverDriver)
    elif name == "gateway-driver":
        serve(GatewayDriver)
    else:
        serve(lambda: Driver(name))


if __name__ == "__main__":
    main()
