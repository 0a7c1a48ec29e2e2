"""Server-sent events, encoded the way OpenAI sends them: ``data: {json}\\n\\n`` per chunk, ``data: [DONE]\\n\\n``
at the end, and ``data: {"error": {...}}\\n\\n`` (then the end of the body) when a stream fails after it started.

A chunk goes out in OpenAI's own shape, not the full struct: a delta carries only what it has (``{"content": "Hi"}``;
the first ``{"role": "assistant", ...}``; the last ``{}``), a tool-call fragment only its ``index`` and what it
adds, and ``usage`` appears only on the chunk that has it. ``finish_reason`` and ``logprobs`` stay, as ``null``
until set, as OpenAI sends them. (The library's ``chunk.model_dump()`` keeps every field, as the ``openai``
package's does.)
"""

from __future__ import annotations

from typing import Any

import msgspec

_encode = msgspec.json.encode
_to_builtins = msgspec.to_builtins

DONE = b"data: [DONE]\n\n"

#: Chunk-level fields OpenAI leaves out when it has nothing for them.
_OPTIONAL = ("usage", "system_fingerprint", "service_tier")


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _prune(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def wire_chunk(chunk: Any) -> dict[str, Any]:
    """``chunk`` (a :class:`~polychat.types.ChatCompletionChunk`) as the dict OpenAI would have sent."""
    data: dict[str, Any] = _to_builtins(chunk)
    for key in _OPTIONAL:
        if data.get(key) is None:
            data.pop(key, None)
    for choice in data.get("choices", ()):
        delta = choice.get("delta")
        if delta:
            choice["delta"] = _prune(delta)
    return data


def frame(chunk: Any) -> bytes:
    """One ``data:`` event holding ``chunk`` in OpenAI's wire shape."""
    return b"data: " + _encode(wire_chunk(chunk)) + b"\n\n"
