"""JSON in and out through msgspec: one encoder and decoder for the whole package."""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def dumps(obj: Any) -> bytes:
    return _encoder.encode(obj)


def loads(data: bytes | str) -> Any:
    return _decoder.decode(data)


def loads_or_text(body: bytes) -> Any:
    """Decoded JSON, or the body as text when it is not JSON (error pages, proxies)."""
    try:
        return _decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return body.decode("utf-8", errors="replace")
