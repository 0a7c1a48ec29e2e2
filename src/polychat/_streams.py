"""Stream and AsyncStream: the chunks of a streamed answer, as the caller iterates them.

A module of its own because every streamed result has this shape: chat completions (:mod:`polychat.client`),
Responses events (:mod:`polychat._responses`) and the gateway's endpoints all hand one out or take one in. The two
classes share their state in :class:`_StreamState` and differ only by ``await``
(``tests/test_unasync.py`` holds them to it).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Generic, TypeVar

from ._record import CallRecord
from .errors import Attempt

__all__ = ["AsyncStream", "Stream"]

_T = TypeVar("_T")


class _End:
    """Marks "no first chunk held" (a stream that ended before its first chunk)."""


_END = _End()


class _StreamState(Generic[_T]):
    """What :class:`Stream` and :class:`AsyncStream` share: the first chunk (read before ``create()`` returned),
    the call's record and the latest provider. The two classes are only the iteration protocols around it, kept
    identical but for ``await`` by ``tests/test_unasync.py``."""

    def __init__(self, first: _T | _End, record: CallRecord | None) -> None:
        self._first = first
        self._record = record
        self.provider: str | None = getattr(first, "provider", None)
        if record is not None and record.trace is not None and first is not _END:
            record.chunk(first)

    @property
    def attempts(self) -> list[Attempt]:
        return self._record.attempts if self._record is not None else []

    def _seen(self, item: _T) -> _T:
        self.provider = getattr(item, "provider", self.provider)
        if self._record is not None and self._record.trace is not None:
            self._record.chunk(item)
        return item

    def _failed(self, error: BaseException) -> None:
        if self._record is not None:
            self._record.finish(error=error)

    def _ended(self) -> None:
        if self._record is not None:
            self._record.finish()


class Stream(_StreamState[_T]):
    """The chunks of a streamed answer. Iterate it; ``close()`` (or leaving a ``with`` block) releases the
    connection at once, also when left early. ``provider`` names the provider of the latest chunk; ``attempts``
    lists every provider attempt that has ended (all of them, once the stream has)."""

    def __init__(self, chunks: Iterator[_T], first: _T | _End = _END, record: CallRecord | None = None) -> None:
        super().__init__(first, record)
        self._chunks = chunks

    def __iter__(self) -> Stream[_T]:
        return self

    def __next__(self) -> _T:
        first = self._first
        if not isinstance(first, _End):
            self._first = _END
            return first
        try:
            item = next(self._chunks)
        except StopIteration:
            self.close()
            raise
        except BaseException as e:
            self._failed(e)
            raise
        return self._seen(item)

    def close(self) -> None:
        self._first = _END
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            self._ended()

    def __enter__(self) -> Stream[_T]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class AsyncStream(_StreamState[_T]):
    """Async counterpart of :class:`Stream`: ``async for``, ``await aclose()``, ``async with``."""

    def __init__(self, chunks: AsyncIterator[_T], first: _T | _End = _END, record: CallRecord | None = None) -> None:
        super().__init__(first, record)
        self._chunks = chunks

    def __aiter__(self) -> AsyncStream[_T]:
        return self

    async def __anext__(self) -> _T:
        first = self._first
        if not isinstance(first, _End):
            self._first = _END
            return first
        try:
            item = await anext(self._chunks)
        except StopAsyncIteration:
            await self.aclose()
            raise
        except BaseException as e:
            self._failed(e)
            raise
        return self._seen(item)

    async def aclose(self) -> None:
        self._first = _END
        try:
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._ended()

    async def __aenter__(self) -> AsyncStream[_T]:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # Dropped without aclose() (nothing can be awaited here): at least the call's record and spans end.
        with contextlib.suppress(Exception):
            self._ended()

    async def close(self) -> None:
        """The same as :meth:`aclose` (the openai package's name for it)."""
        await self.aclose()
