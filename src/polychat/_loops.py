"""Closing async resources from sync code (``Client.close()``): on the loop that owns them, whichever thread runs it.

Connections opened by async code belong to an event loop: the caller's, or the background loop sync hedging runs
on (:mod:`polychat.routing._bridge`). A sync ``close()`` must still release them, so each is closed on its own
loop: scheduled as a task when that loop is this thread's (the task is kept referenced until it is done, or the
loop could drop it half-way), run there and waited for when it runs in another thread, and run to completion here
when no loop owns it any more.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

#: Close tasks scheduled on this thread's running loop; referenced until they finish.
_pending: set[asyncio.Task[Any]] = set()


def close_soon(
    close: Callable[[], Coroutine[Any, Any, Any]],
    loop: asyncio.AbstractEventLoop | None,
    *,
    abandon: Callable[[], None] | None = None,
) -> None:
    """Run ``close()`` on ``loop`` (None: whichever loop is at hand); ``abandon`` is for a loop that is gone."""
    try:
        current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    target = loop or current
    if target is not None and target is current:
        task = target.create_task(close())
        _pending.add(task)
        task.add_done_callback(_pending.discard)
    elif target is not None and target.is_running() and not target.is_closed():
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), target).result(timeout=5)
    elif abandon is not None:
        abandon()
    else:
        with contextlib.suppress(Exception):
            asyncio.run(close())
