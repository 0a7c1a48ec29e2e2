"""Running async code from sync code, for the few sync features that need real concurrency (hedging).

A hedged request races two providers and must cancel the loser at once, connection and all. Threads cannot
interrupt a blocking read before the response headers arrive; asyncio tasks can. So sync hedging runs the async
implementation on one process-wide background loop and hands the chunks back — one implementation, two faces.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def _get_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="polychat-bridge", daemon=True).start()
            _loop = loop
        return _loop


def existing_loop() -> asyncio.AbstractEventLoop | None:
    """The bridge loop if sync code has started it (what it opened lives there), else None."""
    return _loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the bridge loop and wait for its result in this thread."""
    return asyncio.run_coroutine_threadsafe(coro, _get_loop()).result()


def iterate(chunks: AsyncIterator[T]) -> Iterator[T]:
    """A sync generator over an async iterator living on the bridge loop; closing it closes the source."""
    try:
        while True:
            try:
                item = run(_anext(chunks))
            except StopAsyncIteration:
                return
            yield item
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            run(aclose())


async def _anext(chunks: AsyncIterator[T]) -> T:
    return await chunks.__anext__()
