"""uvicorn's HTTP protocol with the gateway's connection limits (the why and the rules: :mod:`._connlimits`).

A module of its own so that building the app does not import uvicorn; uvicorn imports it by name
(``http="polychat.server._protocol:GuardedHTTPProtocol"``) in every worker.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from . import _connlimits


def _reply(status: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


_TIMEOUT = _reply(b"408 Request Timeout")
_TOO_LARGE = _reply(b"431 Request Header Fields Too Large")
_ENDS = (b"\r\n\r\n", b"\n\n")


class GuardedHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]  # uvicorn names its pick with a variable
    """uvicorn's HTTP protocol with the limits above (``http=`` of uvicorn's config, by import string)."""

    _guard_timer: Any = None
    _waiting_since: float | None = None
    _header_bytes = 0
    _tail = b""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()
        connections = self.server_state.connections
        if len(connections) > _connlimits.current().max_connections:
            waiting = [c for c in connections if getattr(c, "_waiting_since", None) is not None]
            victim = min(waiting, key=lambda c: c._waiting_since) if waiting else self
            victim._reject(b"", "connection_cap")

    def data_received(self, data: bytes) -> None:
        if self._waiting_since is not None:
            seen = self._tail + data
            if any(end in seen for end in _ENDS):
                self._disarm()
            else:
                self._header_bytes += len(data)
                if self._header_bytes > _connlimits.current().max_header_bytes:
                    self._reject(_TOO_LARGE, "header_too_large")
                    return
                self._tail = seen[-3:]
        super().data_received(data)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # -- the header deadline ---------------------------------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self._waiting_since = self.loop.time()
        self._header_bytes = 0
        self._tail = b""
        timeout = _connlimits.current().header_timeout
        self._guard_timer = self.loop.call_later(timeout, self._reject, _TIMEOUT, "header_timeout")

    def _disarm(self) -> None:
        self._waiting_since = None
        if self._guard_timer is not None:
            self._guard_timer.cancel()
            self._guard_timer = None

    def _reject(self, reply: bytes, reason: str) -> None:
        self._disarm()
        if self.transport.is_closing():
            return
        _connlimits.rejected(reason)
        if reply:
            self.transport.write(reply)
        self.transport.close()
