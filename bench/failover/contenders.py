"""The worker: one contender, every scenario cell at once, one JSON line per cell on stdout.

``python bench/failover/contenders.py`` reads a JSON job on stdin::

    {"contender": "litellm-router", "gateway": null, "cells": [{"id": ..., "a": url, "b": url, "stream": bool,
     "calls": n}, ...], "timeout": 10, "retries": 1, "cap": 45, "cell_cap": 90}

Every cell's client is built first, one after another; then each cell runs on a thread of its own (an async
contender runs its own event loop there), so a contender that hangs in one scenario holds up nothing else. A cell's
calls are made one after another; each records the text the caller received, whether the call ended as a complete
answer or raised, and the seconds it took. A call still running at ``cap`` (a cell of several calls: ``cell_cap``)
is reported with ``hang: true``; its thread is abandoned and the process exits with ``os._exit``.

The contenders are built here exactly as their documentation shows, with the same settings where they have them:
``timeout`` seconds per attempt, ``retries`` retries per provider, and the fallback list ``[a, b]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

MODEL = "bench-model"
MESSAGES = [{"role": "user", "content": "Count from one to twelve in words."}]
#: polychat's own switches (the README says why each is needed)
PC_FIRST_TOKEN = 5.0
PC_IDLE = 5.0
PC_HEDGE = 4.0

Call = Callable[[bool], str]


class Job:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.timeout: float = spec["timeout"]
        self.retries: int = spec["retries"]
        self.gateway: str | None = spec.get("gateway")
        self.headers: dict[str, str] = spec.get("headers") or {}
        self.api_key: str = spec.get("api_key") or "bench"


def _join(chunks: Any) -> str:
    return "".join((c.choices[0].delta.content or "") if c.choices else "" for c in chunks)


async def _ajoin(chunks: Any) -> str:
    out = []
    async for c in chunks:
        if c.choices:
            out.append(c.choices[0].delta.content or "")
    return "".join(out)


# -- polychat ----------------------------------------------------------------------------------------------------


def _pc_chain(job: Job, a: str, b: str, *, defaults: bool) -> Any:
    from polychat.providers import OpenaiChat
    from polychat.routing import RetryProvider

    members = [OpenaiChat(base_url=a, api_key="bench", name="A"), OpenaiChat(base_url=b, api_key="bench", name="B")]
    if defaults:
        return RetryProvider(members)
    return RetryProvider(
        members,
        max_retries=job.retries,
        first_token_timeout=PC_FIRST_TOKEN,
        idle_timeout=PC_IDLE,
        hedge_after=PC_HEDGE,
        resume=True,
    )


def polychat_sync(job: Job, a: str, b: str, *, defaults: bool = False) -> Call:
    from polychat import Client

    client: Any = Client(provider=_pc_chain(job, a, b, defaults=defaults), timeout=None if defaults else job.timeout)

    def call(stream: bool) -> str:
        if not stream:
            return client.chat.completions.create(model=MODEL, messages=MESSAGES).choices[0].message.content or ""
        return _join(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))

    return call


def polychat_async(job: Job, a: str, b: str) -> Call:
    from polychat import AsyncClient

    async def one(stream: bool) -> str:
        async with AsyncClient(provider=_pc_chain(job, a, b, defaults=False), timeout=job.timeout) as client:
            if not stream:
                r = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
                return r.choices[0].message.content or ""
            return await _ajoin(await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))

    return lambda stream: asyncio.run(one(stream))


# -- peers -------------------------------------------------------------------------------------------------------


def _openai_calls(client: Any, model: str) -> Call:
    """One call through an ``openai.OpenAI`` client, the answer's text whether streamed or not."""

    def call(stream: bool) -> str:
        if not stream:
            r = client.chat.completions.create(model=model, messages=MESSAGES)
            return r.choices[0].message.content or ""
        return _join(client.chat.completions.create(model=model, messages=MESSAGES, stream=True))

    return call


def openai_sdk(job: Job, a: str, b: str) -> Call:
    """The openai SDK has no fallback: one provider, its own retries."""
    import openai

    return _openai_calls(
        openai.OpenAI(base_url=a, api_key="bench", timeout=job.timeout, max_retries=job.retries), MODEL
    )


def via_gateway(job: Job, a: str, b: str, route: str) -> Call:
    """A gateway in front of both providers; its client (the openai SDK) neither retries nor times out early."""
    import openai

    assert job.gateway is not None
    headers = dict(job.headers)
    if "x-portkey-config" in headers:  # Portkey takes its fallback config per request
        headers["x-portkey-config"] = headers["x-portkey-config"].replace("{A}", a).replace("{B}", b)
    client = openai.OpenAI(
        base_url=job.gateway, api_key=job.api_key, timeout=600, max_retries=0, default_headers=headers
    )
    return _openai_calls(client, route)


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm


def litellm_router(job: Job, a: str, b: str) -> Call:
    litellm = _litellm()

    def deployment(name: str, url: str) -> dict[str, Any]:
        return {"model_name": name, "litellm_params": {"model": f"openai/{MODEL}", "api_base": url, "api_key": "x"}}

    router = litellm.Router(
        model_list=[deployment("A", a), deployment("B", b)],
        fallbacks=[{"A": ["B"]}],
        num_retries=job.retries,
        timeout=job.timeout,
        stream_timeout=job.timeout,
    )

    def call(stream: bool) -> str:
        r = router.completion(model="A", messages=MESSAGES, stream=stream)
        return _join(r) if stream else (r.choices[0].message.content or "")

    return call


def langchain(job: Job, a: str, b: str) -> Call:
    from langchain_openai import ChatOpenAI

    def model(url: str) -> Any:
        return ChatOpenAI(model=MODEL, base_url=url, api_key="bench", timeout=job.timeout, max_retries=job.retries)

    chain = model(a).with_fallbacks([model(b)])

    def call(stream: bool) -> str:
        if not stream:
            return str(chain.invoke(MESSAGES).content)
        return "".join(str(c.content) for c in chain.stream(MESSAGES))

    return call


_g4f_names = itertools.count()


def g4f(job: Job, a: str, b: str) -> Call:
    from g4f.client import Client
    from g4f.client.factory import create_custom_provider
    from g4f.providers.retry_provider import RetryProvider

    # g4f registers custom providers by name: each cell needs its own names, or cells would share providers.
    n = next(_g4f_names)
    providers = [
        create_custom_provider(a, "bench", name=f"BenchA{n}"),
        create_custom_provider(b, "bench", name=f"BenchB{n}"),
    ]
    client = Client(provider=RetryProvider(providers, shuffle=False, max_retries=job.retries))

    def call(stream: bool) -> str:
        r = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=stream, timeout=job.timeout)
        return _join(r) if stream else (r.choices[0].message.content or "")

    return call


CONTENDERS: dict[str, Callable[..., Call]] = {
    "polychat": polychat_sync,
    "polychat-async": polychat_async,
    "polychat-defaults": lambda job, a, b: polychat_sync(job, a, b, defaults=True),
    "openai": openai_sdk,
    "litellm-router": litellm_router,
    "langchain": langchain,
    "g4f": g4f,
}
GATEWAYS = ("polychat-serve", "litellm-proxy", "portkey")


# -- running the cells --------------------------------------------------------------------------------------------


class Cell:
    """One scenario in one mode: its calls, made one after another on a thread of their own."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.calls: list[dict[str, Any]] = []
        self.caller: Call | None = None
        self.first_start: float | None = None
        self.call_start: float | None = None
        self.done = False

    def build(self, job: Job, name: str) -> None:
        a, b = self.spec["a"], self.spec["b"]
        try:
            self.caller = (
                via_gateway(job, a, b, self.spec["route"]) if name in GATEWAYS else CONTENDERS[name](job, a, b)
            )
        except Exception as e:  # the contender could not even be built
            self.calls.append({"ok": False, "error": f"setup: {type(e).__name__}: {e}"[:300], "elapsed": 0.0})
            self.done = True

    def run(self) -> None:
        assert self.caller is not None
        try:
            for _ in range(self.spec["calls"]):
                t0 = self.call_start = time.monotonic()
                if self.first_start is None:
                    self.first_start = t0
                try:
                    text = self.caller(self.spec["stream"])
                    self.calls.append({"ok": True, "text": text, "elapsed": time.monotonic() - t0})
                except Exception as e:
                    err = f"{type(e).__name__}: {e}".replace("\n", " ")[:300]
                    self.calls.append({"ok": False, "error": err, "elapsed": time.monotonic() - t0})
        finally:
            self.done = True

    def hung(self, now: float, cap: float, cell_cap: float) -> bool:
        """Still running past the cap: the current call's, or for several calls the cell's as a whole."""
        if self.done or self.call_start is None or self.first_start is None:
            return False
        return now - self.call_start > cap or now - self.first_start > cell_cap


def main() -> None:
    spec = json.loads(sys.stdin.read())
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing a library prints may corrupt the results
    job = Job(spec)
    name = spec["contender"]
    cells = [Cell(c) for c in spec["cells"]]
    # Built one after another on this thread: imports and clients are ready before any clock starts, and no
    # library is imported from thirty threads at once.
    for cell in cells:
        cell.build(job, name)
    warm = spec.get("warm")
    if warm:
        # One answer each way from a healthy provider first (a gateway's "warm" route), so that no lazy import or
        # first-call set-up is counted against the first scenario's budget.
        with contextlib.suppress(Exception):
            caller = via_gateway(job, warm, warm, "warm") if name in GATEWAYS else CONTENDERS[name](job, warm, warm)
            caller(False)
            caller(True)
    for cell in cells:
        if not cell.done:
            threading.Thread(target=cell.run, daemon=True).start()
    pending = list(cells)
    while pending:
        now = time.monotonic()
        for cell in list(pending):
            hang = cell.hung(now, spec["cap"], spec["cell_cap"])
            if cell.done or hang:
                line = {"id": cell.spec["id"], "calls": list(cell.calls), "hang": hang and not cell.done}
                out.write(json.dumps(line) + "\n")
                out.flush()
                pending.remove(cell)
        time.sleep(0.2)  # watching the cells' clocks; nothing waits on this for synchronisation
    os._exit(0)  # abandon hung calls


if __name__ == "__main__":
    main()
