"""Server-sent events, encoded the way OpenAI sends them: ``data: {json}\\n\\n`` per chunk, ``data: [DONE]\\n\\n``
at the end, and ``data: {"error": {...}}\\n\\n`` (then the end of the body) when a stream fails after it started.

``msgspec.json.encode(chunk)`` is already OpenAI's wire JSON (``.provider`` is not a field), so a frame is one
encode and two concatenations.
"""

from __future__ import annotations

from typing import Any

import msgspec

_encode = msgspec.json.encode

DONE = b"data: [DONE]\n\n"


def frame(obj: Any) -> bytes:
    """One ``data:`` event holding ``obj`` as JSON."""
    return b"data: " + _encode(obj) + b"\n\n"
